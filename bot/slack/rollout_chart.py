"""Turn a deployment's analysis log into the chart posted at the end of a rollout."""

from __future__ import annotations

import json
from datetime import datetime

from bot.slack.charts import canary_chart_png
from bot.store.models import Deployment


def rollout_chart(dep: Deployment) -> bytes:
    """Canary vs baseline per metric over the whole rollout, steps marked by weight."""
    history = json.loads(dep.analysis_log or "[]")
    if not history:
        return canary_chart_png({}, title=f"{dep.service} {dep.version}: no analysis data")
    start = datetime.fromisoformat(history[0]["t"])
    series: dict[str, tuple[list[tuple[float, float]], list[tuple[float, float]]]] = {}
    marks: list[tuple[float, str]] = []
    last_stage = None
    for entry in history:
        t = (datetime.fromisoformat(entry["t"]) - start).total_seconds()
        if entry["stage"] != last_stage:
            marks.append((t, f"{entry['weight']}%"))
            last_stage = entry["stage"]
        for name, values in entry["metrics"].items():
            canary, baseline = series.setdefault(name, ([], []))
            if values.get("canary") is not None:
                canary.append((t, float(values["canary"])))
            if values.get("baseline") is not None:
                baseline.append((t, float(values["baseline"])))
    title = f"{dep.service} {dep.version} on {dep.env}: canary vs baseline"
    return canary_chart_png(series, title=title, step_marks=marks)
