"""The adapters: each turns its framework's updates into `Incoming`s for the runtime.

`aiogram` and `ptb` serve Telegram (what they share is in `telegram`); `terminal` (with
`screen`, what it shows) is the same shop in a terminal. They depend on the runtime
(`bot.framework`); nothing depends on them but `bot.app`, which picks one.
"""
