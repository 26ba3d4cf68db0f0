"""The status page, `/ui/`: server-rendered from the operator API's model (being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from receiver.operator.api import Operator


def register(app: Flask, op: Operator) -> None:
    """Mount the status page on `app` (the receiver's)."""
