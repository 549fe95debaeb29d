"""The card shop itself: catalog, stock, wallet, orders, tiers, points and support.

Knows no chat platform; `bot/` renders what this package decides.
"""
