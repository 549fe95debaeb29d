"""Settings read from the environment and `.env`, validated once at start.

A wrong value stops the process with a message naming the setting, so a typo never runs
the shop with a silent default (see `load_settings`).
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/cardshop.db"
DEFAULT_TIERS_FILE = Path(__file__).with_name("tiers.toml")
#: The 易支付 payment types (支付宝, 微信, QQ钱包) a gateway may be asked for.
EPAY_TYPES = ("alipay", "wxpay", "qqpay")
#: Where the gateway calls back and sends the buyer after paying, under PUBLIC_URL.
EPAY_NOTIFY_PATH = "/pay/epay/notify"
EPAY_RETURN_PATH = "/pay/epay/return"


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message names it."""


class Settings(BaseSettings):
    """Every setting of the shop; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Database and cache
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None

    # The shop
    shop_timezone: str = "Asia/Shanghai"
    shop_currency: str = "CNY"
    default_locale: Literal["zh_CN", "en"] = "zh_CN"
    tiers_file: Path = DEFAULT_TIERS_FILE
    code_encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    data_dir: Path = Path("data")

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base: str | None = None
    bot_framework: Literal["aiogram", "ptb"] = "aiogram"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    #: The one HTTP server (webhook, payment callbacks); WEBHOOK_LISTEN is its old name.
    http_listen: str = Field(
        default="127.0.0.1:8080", validation_alias=AliasChoices("http_listen", "webhook_listen")
    )
    #: The reseller API (/api/v1/) on HTTP_LISTEN whenever `cardshop run` runs.
    api_enabled: bool = True
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    staff_chat_id: int | None = None
    #: Broadcast messages per second (Telegram allows about 30 per bot).
    broadcast_rate: float = Field(default=25.0, gt=0)

    # Payments (wallet top-ups)
    #: The shop's public https root: 易支付 calls back PUBLIC_URL + EPAY_NOTIFY_PATH.
    public_url: str | None = None
    #: Telegram Stars charged per ¥1 credited (rounded up); unset, Stars are not offered.
    stars_per_yuan: Decimal | None = Field(default=None, gt=0)
    #: The 易支付 gateway's root (where submit.php and api.php live), merchant id and key.
    epay_url: str | None = None
    epay_pid: str | None = None
    epay_key: SecretStr | None = None
    epay_sign_type: Literal["MD5"] = "MD5"
    #: The payment types offered through 易支付, in this order.
    epay_methods: Annotated[tuple[str, ...], NoDecode] = ("alipay", "wxpay")

    @field_validator("code_encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("code_encryption_keys")
    @classmethod
    def _check_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for key in keys:
            try:
                Fernet(key.get_secret_value().encode())
            except ValueError as exc:
                raise ValueError("each key must be a urlsafe base64 32-byte Fernet key") from exc
        return keys

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        return value

    @field_validator("epay_methods", mode="before")
    @classmethod
    def _split_methods(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("epay_methods")
    @classmethod
    def _check_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [method for method in methods if method not in EPAY_TYPES]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}: use {', '.join(EPAY_TYPES)}")
        if len(set(methods)) != len(methods):
            raise ValueError("a method is listed twice")
        return methods

    @field_validator("public_url", "epay_url")
    @classmethod
    def _check_web_root(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("use an http(s):// address")
        return value.strip().rstrip("/")

    @field_validator("shop_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("tiers_file")
    @classmethod
    def _check_tiers_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.shop_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _key_file(settings: Settings) -> Path:
    return settings.data_dir / "code-encryption.key"


def resolve_code_keys(settings: Settings) -> list[bytes]:
    """Fernet keys, newest first.

    On SQLite with no key configured, one is generated into `data/` on first run so a
    fresh shop works at once; on PostgreSQL several workers must share a key, so it is
    required there.
    """
    if settings.code_encryption_keys:
        return [key.get_secret_value().encode() for key in settings.code_encryption_keys]
    if not settings.is_sqlite:
        raise SettingsError("CODE_ENCRYPTION_KEYS: required when DATABASE_URL is PostgreSQL")
    path = _key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return [path.read_bytes().strip()]


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's report into one line per bad setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            lines.append(f"{name}: {error['msg']}")
        raise SettingsError("; ".join(lines)) from None
