"""Imports every domain's models so metadata (Alembic, tests) sees all tables."""

from siyu.accounts import models as accounts_models
from siyu.core import models as core_models
from siyu.customers import models as customers_models
from siyu.team import models as team_models

__all__ = ["accounts_models", "core_models", "customers_models", "team_models"]
