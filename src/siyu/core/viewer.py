"""Who is asking: the identity and data scope that every service call receives."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Viewer:
    user_id: int | None
    username: str
    role: str
    sees_all_accounts: bool
    account_ids: frozenset[int] = field(default_factory=frozenset)
    may_see_phones: bool = True

    def can_see_account(self, account_id: int) -> bool:
        return self.sees_all_accounts or account_id in self.account_ids

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


SYSTEM = Viewer(user_id=None, username="system", role="admin", sees_all_accounts=True)
