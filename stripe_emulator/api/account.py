"""The account the API key belongs to: ``GET /v1/account``, which clients read first."""

from __future__ import annotations

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..params import Params
from ..plumbing import api, store

bp = Blueprint("account", __name__)


@api(bp, "/v1/account", ["GET"])
def retrieve_account(p: Params, ctx: Ctx):
    """One fixed US account; Connect (other accounts) is not emulated."""
    p.done()
    seeded = store().get("products", "prod_free")  # the catalog is seeded when the account is set up
    return objects.account(seeded["created"] if seeded else store().now())
