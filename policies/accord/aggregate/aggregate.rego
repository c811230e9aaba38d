# METADATA
# title: Small numbers stay hidden (R15)
# description: >-
#   For aggregate reports: a count below the jurisdiction's small_count_threshold
#   (default 11) is suppressed. Unknown jurisdiction: every count is suppressed.
package accord.aggregate

import data.accord.jurisdiction

# METADATA
# title: The smallest count a report may show
# custom:
#   rule: R15
threshold(id) := jurisdiction.settings(id).small_count_threshold

# METADATA
# title: The count must be suppressed in a report
# custom:
#   rule: R15
suppressed(n, id) if n < threshold(id)

suppressed(_, id) if not jurisdiction.known(id)
