"""SMART goals (目标) and the dashboards each role opens first (工作台)."""
