"""The Siyu WeCom simulator: a stand-in for the WeCom platform on one machine.

Why it exists: Siyu must be demonstrable and testable without a WeChat account, over the
real protocol, so nothing in Siyu knows it is talking to a simulator. Three parts:

- ``corp.VirtualCorp`` — a corp held in memory (members, external contacts and their
  follow users, corp tags, contact ways, group chats, welcome codes, mass sends, and its
  微信客服 desk ``kf.KfDesk``: 客服 accounts, sessions and their append-only message logs),
  deterministic from a seed, saved to and loaded from JSON;
- ``server`` — the WeCom server API (``/cgi-bin/...``: paths, parameters, ``errcode`` /
  ``errmsg`` and access-token rules as the platform and wechatpy's client use them) plus
  simulator-only controls under ``/_simulator/``;
- ``driver`` — scenarios that change the virtual corp and send *real encrypted callbacks*
  (wechatpy's WeCom crypto) to Siyu's ``/wecom/callback``, retrying like the platform.

This package is its own world: it never imports the product (``siyu.core`` and the
domains) and only talks to Siyu over HTTP, exactly as WeCom would.
"""
