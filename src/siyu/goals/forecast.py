"""A goal's progress, its two forecasts to the deadline and its state — pure functions over ``Daily``.

Progress (per mode, see ``catalogue``): sum → Σ days; level → the latest known value; ratio →
Σ numerators ÷ Σ denominators; share → Σ numerators ÷ base.

Forecasts, from the days observed so far (the goal's start up to today):

* linear — sum/ratio/share: each flow's mean per *complete* day (today is still running) carried
  over every day left to the deadline; level: a least-squares line through the known values,
  read at the deadline.
* seasonal (weekday-aware) — sum/ratio/share: the mean of each weekday (Monday's mean for the
  Mondays left, …; a weekday never seen uses the overall mean); level: the linear line plus the
  mean residual of the deadline's weekday. With fewer than ``SEASONAL_MIN_DAYS`` days it equals
  the linear one (too few weeks to tell weekdays apart).

State rule (documented in the README): before the start → on_track; no data at all → at_risk (nothing
to judge by; off_track once the deadline passed); after the deadline → on_track when the target was
met, else off_track; otherwise the forecast (seasonal when there are at least ``SEASONAL_MIN_DAYS``
days, else linear) against the target: attainment = forecast ÷ target (target ÷ forecast when lower
is better) — ≥ 1 on_track, ≥ ``AT_RISK_FROM`` at_risk, below that off_track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from siyu.goals.catalogue import Daily, GoalMetric

SEASONAL_MIN_DAYS = 14
AT_RISK_FROM = 0.9
STATES = ("on_track", "at_risk", "off_track")


@dataclass
class Forecast:
    linear: float | None = None
    seasonal: float | None = None
    linear_path: list[tuple[date, float]] = field(default_factory=list)
    seasonal_path: list[tuple[date, float]] = field(default_factory=list)

    @property
    def chosen(self) -> float | None:
        return self.seasonal if len(self.seasonal_path) and self.seasonal is not None else self.linear


def _ratio(num: float, den: float | None) -> float | None:
    return round(num / den, 2) if den else None


def progress_path(metric: GoalMetric, daily: Daily) -> list[float | None]:
    """The progress as it stood at the end of each observed day (the chart's actual line)."""
    out: list[float | None] = []
    num = den = 0.0
    last: float | None = None
    for i, value in enumerate(daily.values):
        if metric.mode == "level":
            last = value if value is not None else last
            out.append(None if value is None else round(value, 2))
            continue
        num += value or 0.0
        if metric.mode == "sum":
            out.append(round(num, 2))
        elif metric.mode == "share":
            out.append(min(_ratio(num, daily.base) or 0.0, 100.0) if daily.base else None)
        else:
            den += (daily.denominators or [])[i] if daily.denominators else 0.0
            out.append(_ratio(num, den))
    return out


def progress(metric: GoalMetric, daily: Daily) -> float | None:
    path = [v for v in progress_path(metric, daily) if v is not None]
    return path[-1] if path else None


def _flow_forecasts(values: list[float], days: list[date], left: list[date]) -> tuple[list[float], list[float]]:
    """Cumulative totals on each day left: (linear, seasonal)."""
    complete = values[:-1] if len(values) > 1 else values  # the last observed day (today) is still running
    complete_days = days[:len(complete)]
    mean = sum(complete) / len(complete) if complete else 0.0
    by_weekday: dict[int, list[float]] = {}
    for day, value in zip(complete_days, complete, strict=True):
        by_weekday.setdefault(day.weekday(), []).append(value)
    seasonal_mean = {wd: sum(v) / len(v) for wd, v in by_weekday.items()}
    total = sum(values)
    linear, seasonal = [], []
    run_l = run_s = total
    for day in left:
        run_l += mean
        run_s += seasonal_mean.get(day.weekday(), mean)
        linear.append(run_l)
        seasonal.append(run_s)
    return linear, seasonal


def forecast(metric: GoalMetric, daily: Daily, *, deadline: date) -> Forecast:
    if not daily.has_data:
        return Forecast()
    last_day = daily.days[-1]
    left = [last_day + timedelta(days=n) for n in range(1, (deadline - last_day).days + 1)]
    seasonal_ok = len(daily.days) >= SEASONAL_MIN_DAYS
    if metric.mode == "level":
        return _level_forecast(metric, daily, left, seasonal_ok)
    nums = [v or 0.0 for v in daily.values]
    lin_n, sea_n = _flow_forecasts(nums, daily.days, left)
    if metric.mode == "sum":
        lin, sea = lin_n, sea_n
    elif metric.mode == "share":
        base = daily.base or 0.0
        lin = [min(_ratio(v, base) or 0.0, 100.0) for v in lin_n]
        sea = [min(_ratio(v, base) or 0.0, 100.0) for v in sea_n]
    else:
        dens = list(daily.denominators or [0.0] * len(nums))
        lin_d, sea_d = _flow_forecasts(dens, daily.days, left)
        lin = [_ratio(n, d) or 0.0 for n, d in zip(lin_n, lin_d, strict=True)]
        sea = [_ratio(n, d) or 0.0 for n, d in zip(sea_n, sea_d, strict=True)]
    return _made(left, lin, sea if seasonal_ok else lin, current=progress(metric, daily))


def _made(left: list[date], lin: list[float], sea: list[float], *, current: float | None) -> Forecast:
    if not left:  # the deadline is today or past: the forecast is where it stands
        return Forecast(linear=current, seasonal=current)
    return Forecast(linear=round(lin[-1], 2), seasonal=round(sea[-1], 2),
                    linear_path=[(d, round(v, 2)) for d, v in zip(left, lin, strict=True)],
                    seasonal_path=[(d, round(v, 2)) for d, v in zip(left, sea, strict=True)])


def _level_forecast(metric: GoalMetric, daily: Daily, left: list[date], seasonal_ok: bool) -> Forecast:
    known = [(i, v) for i, v in enumerate(daily.values) if v is not None]
    n = len(known)
    mean_x = sum(i for i, _v in known) / n
    mean_y = sum(v for _i, v in known) / n
    spread = sum((i - mean_x) ** 2 for i, _v in known)
    slope = sum((i - mean_x) * (v - mean_y) for i, v in known) / spread if spread else 0.0
    intercept = mean_y - slope * mean_x
    residuals: dict[int, list[float]] = {}
    for i, v in known:
        residuals.setdefault(daily.days[i].weekday(), []).append(v - (intercept + slope * i))
    offset = {wd: sum(r) / len(r) for wd, r in residuals.items()}
    ceiling = 100.0 if metric.unit == "percent" else float("inf")
    start = daily.days[0]
    lin, sea = [], []
    for day in left:
        x = (day - start).days
        value = intercept + slope * x
        lin.append(min(max(value, 0.0), ceiling))
        sea.append(min(max(value + offset.get(day.weekday(), 0.0), 0.0), ceiling))
    return _made(left, lin, sea if seasonal_ok and n >= SEASONAL_MIN_DAYS else lin, current=progress(metric, daily))


def attainment(metric: GoalMetric, value: float | None, target: float) -> float | None:
    if value is None:
        return None
    if metric.lower_is_better:
        return float("inf") if value <= 0 else target / value
    return value / target if target else None


def state(metric: GoalMetric, *, daily: Daily, target: float, start: date, deadline: date, today: date,
          outlook: Forecast) -> str:
    if today < start:
        return "on_track"
    if not daily.has_data:
        return "off_track" if today > deadline else "at_risk"
    value = progress(metric, daily) if today > deadline else outlook.chosen
    share = attainment(metric, value, target)
    if share is None:
        return "at_risk"
    if share >= 1:
        return "on_track"
    if today > deadline:
        return "off_track"
    return "at_risk" if share >= AT_RISK_FROM else "off_track"
