"""The relay's stages, one module each, run in this order over one list of poll items
(``model.PollItem``): 1 unseal, 2 validate, 3 decide (``decide_wasm``: the in-process
engine), 4 project, 5 seal, 6 deliver. See docs/relay.md."""
