"""Imports every domain's models so metadata (Alembic, tests) sees all tables, and every
domain's Huey tasks so a worker knows them."""

from siyu.accounts import models as accounts_models
from siyu.analytics import models as analytics_models  # noqa: F401  (registers its tables)
from siyu.autoreply import models as autoreply_models
from siyu.campaigns import models as campaigns_models
from siyu.channels import models as channels_models
from siyu.core import models as core_models
from siyu.coupons import models as coupons_models
from siyu.customers import models as customers_models
from siyu.draws import models as draws_models
from siyu.goals import models as goals_models
from siyu.groups import models as groups_models
from siyu.groups.moderation import models as moderation_models
from siyu.inbox import models as inbox_models
from siyu.library import models as library_models
from siyu.maintenance import models as maintenance_models
from siyu.moments import models as moments_models
from siyu.mp import models as mp_models
from siyu.offline import models as offline_models
from siyu.orders import models as orders_models
from siyu.referrals import models as referrals_models
from siyu.segments import models as segments_models
from siyu.sends import models as sends_models
from siyu.sops import models as sops_models
from siyu.team import models as team_models
from siyu.wecom import models as wecom_models

__all__ = ["accounts_models", "autoreply_models", "channels_models", "core_models", "customers_models",
           "groups_models", "inbox_models", "maintenance_models", "mp_models", "orders_models", "segments_models",
           "sends_models", "sops_models", "team_models", "wecom_models"]
__all__ += ["library_models"]
__all__ += ["moments_models"]
__all__ += ["moderation_models"]
__all__ += ["offline_models"]
__all__ += ["goals_models"]
__all__ += ["campaigns_models"]
__all__ += ["coupons_models", "draws_models", "referrals_models"]  # 用户转化 (issue 23)


def load_tasks() -> list[str]:
    """Import every domain's ``jobs.py`` (its Huey tasks) so a worker can run them."""
    import importlib
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent
    names = sorted(f"siyu.{path.parent.name}.jobs" for path in package.glob("*/jobs.py"))
    names += sorted(f"siyu.{p.parent.parent.name}.{p.parent.name}.jobs" for p in package.glob("*/*/jobs.py"))
    for name in names:
        importlib.import_module(name)
    return names
