"""Helpers and shared data of the tests (factories, the test registry, keys, the stack as the
tests use it); the conftests hold only fixtures."""
