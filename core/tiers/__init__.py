"""The tier engine (等级), in four parts a newcomer can read one at a time.

- `rules`: pure functions of the ladder and a member's numbers: which tier the numbers
  earn, how far the next tier is, what the quarterly review decides. No database.
- `metrics`: the one SQL statement that measures a member (spend, purchases, violations,
  fulfilment, referrals), and the GROUP BY statements that measure a range of members
  at once for the review, built from the same conditions.
- `moves`: every tier move and the reads around them: the check after a purchase or
  check-in, the fast track and trials, admin moves, the level card's evaluation.
- `review`: the quarterly maintenance review with its downgrade protection, set-based:
  a batch of members per transaction, whatever the member count.

Rules and numbers come from the ladder (core/tiers.toml); this package only reads them.
"""
