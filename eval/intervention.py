"""A Table II-style intervention: one factual predicted class 1 (e.g. high stress) and what the
best method's CF changes, in words, using each feature's prompt name and unit.

For a cohort not marked synthetic (DESIGN.md "Privacy and safety") the example names its window
and participant by pseudonym ("window 1", "participant A") and shows no date or hour: a real
window id holds the participant and the window's start time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from eval.metrics import distance, feature_frame
from sensecf.records import CFRecord
from sensecf.spec import DatasetSpec, FeatureSpec

TARGET_CLASS = 1  # the undesired prediction the intervention moves away from
# The example's stand-ins for real ids: only one window (of one participant) is shown.
WINDOW_PSEUDONYM, PARTICIPANT_PSEUDONYM = "window 1", "participant A"
# Dates and times a model might echo in its raw answer: 2023-05-01, 20230501T14, 14:00, 14:00:59.
DATE_OR_TIME = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}){0,2})?\b|\b\d{8}T\d{2,6}\b|\b\d{1,2}:\d{2}(?::\d{2})?\b"
)


def scrub(text: str, replacements: dict[str, str]) -> str:
    """`text` with each real id (a whole token, not part of a number) replaced by its pseudonym
    and every date or time removed."""
    if replacements:
        ids = "|".join(re.escape(real) for real in sorted(replacements, key=len, reverse=True))
        text = re.sub(rf"(?<![\w.])({ids})(?![\w.])", lambda m: replacements[m.group(1)], text)
    return DATE_OR_TIME.sub("[time removed]", text)


def best_method(table: pd.DataFrame) -> str | None:
    """The method with the highest validity on class-1 factuals (ties: lower distance, then name)."""
    rows = table[(table["class"] == TARGET_CLASS) & (table["n_valid"] > 0)]
    if rows.empty:
        return None
    rows = rows.assign(_d=rows["distance"].fillna(np.inf)).sort_values(
        ["validity", "_d", "method"], ascending=[False, True, True]
    )
    return str(rows.iloc[0]["method"])


def _shown(f: FeatureSpec, value) -> str:
    text = f.format_value(value)
    # "Avg CGM (mg/dL)" already names its unit; "Avg steps" does not.
    if f.unit and f"({f.unit})" not in f.prompt_name:
        text += f" {f.unit}" if f.unit != "%" else "%"
    return text


def _change_words(f: FeatureSpec, before, after) -> str:
    if not f.is_numeric:
        return f"change **{f.prompt_name}** from {before} to {after}"
    verb = "increase" if float(after) > float(before) else "decrease"
    return f"{verb} **{f.prompt_name}** from {_shown(f, before)} to {_shown(f, after)}"


def _changed(f: FeatureSpec, before, after) -> bool:
    if f.is_numeric:
        return f.round_value(before) != f.round_value(after)
    return str(before) != str(after)


def intervention_markdown(
    records: Sequence[CFRecord], spec: DatasetSpec, table: pd.DataFrame, blackbox, *, pseudonymise: bool = False,
    method: str | None = None,
) -> str:
    """The example as Markdown. The factual is chosen deterministically: among the method's (given,
    else the best one's) valid CFs for class-1 factuals, the one with the median distance (ties:
    smallest window id). With `pseudonymise`, no real id, date or hour is printed (a cohort not
    marked synthetic)."""
    undesired, desired = spec.label.classes[TARGET_CLASS], spec.label.classes[1 - TARGET_CLASS]
    why = "the row asked for" if method else "the highest validity"
    method = method or best_method(table)
    if method is None:
        return f"# Intervention example\n\nNo method produced a valid CF for a window predicted '{undesired}'.\n"
    recs = [r for r in records if r.method == method and r.candidate == 0 and r.cf is not None
            and r.factual_pred == TARGET_CLASS]
    preds = blackbox.predict(feature_frame([r.cf for r in recs], spec, f"{method} CFs")) if recs else []
    recs = [r for r, p in zip(recs, preds, strict=True) if p == r.desired_class]
    if not recs:
        return f"# Intervention example\n\n{method} produced no valid CF for a window predicted '{undesired}'.\n"
    cfs = feature_frame([r.cf for r in recs], spec, f"{method} CFs")
    facts = feature_frame([r.factual for r in recs], spec, f"{method} factuals")
    dist = distance(cfs, facts, spec)
    order = sorted(range(len(recs)), key=lambda i: (dist[i], recs[i].window_id))
    pick = order[(len(order) - 1) // 2]
    r = recs[pick]

    has_proba = hasattr(blackbox, "predict_proba")
    p_fact = float(blackbox.predict_proba(facts.iloc[[pick]])[0, 1]) if has_proba else None
    p_cf = float(blackbox.predict_proba(cfs.iloc[[pick]])[0, 1]) if has_proba else None
    prob = (lambda p: f" (P({spec.label.classes[1]}) = {p:.2f})") if has_proba else (lambda p: "")

    changed = [f for f in spec.features if _changed(f, r.factual[f.name], r.cf[f.name])]
    changed_names = {f.name for f in changed}
    row = table[(table.method == method) & (table["class"] == TARGET_CLASS)].iloc[0]
    window, participant = f"`{r.window_id}`", f"`{r.participant_id}`"
    real_ids = {}
    if pseudonymise:
        window, participant = WINDOW_PSEUDONYM, PARTICIPANT_PSEUDONYM
        real_ids = {r.window_id: window, r.participant_id: participant}
    lines = [
        "# Intervention example (Table II style)",
        "",
        f"Method: **{method}**, {why}; its validity on windows predicted '{undesired}' in Table III is "
        f"{row.validity:.2f}. Window {window} ({participant}) is the median-distance "
        f"one of its {len(recs)} valid CFs for such windows (distance {dist[pick]:.3f}).",
        "",
        "## Condition",
        "",
        f"A window predicted **{undesired}**{prob(p_fact)} with "
        + "; ".join(f"{f.prompt_name} {_shown(f, r.factual[f.name])}" for f in spec.features)
        + ".",
        "",
        "## Intervention",
        "",
        f"The counterfactual changes {len(changed)} of {len(spec.features)} features and is predicted "
        f"**{desired}**{prob(p_cf)}:",
        "",
        *[f"- {_change_words(f, r.factual[f.name], r.cf[f.name])}" for f in changed],
        "",
        "| Feature | Factual | Counterfactual | Mutable |",
        "|---|---|---|---|",
        *[
            f"| {f.prompt_name} | {_shown(f, r.factual[f.name])} | "
            f"{('**' + _shown(f, r.cf[f.name]) + '**') if f.name in changed_names else _shown(f, r.cf[f.name])} | "
            f"{'yes' if f.mutable else 'no'} |"
            for f in spec.features
        ],
        "",
    ]
    if r.raw_text:
        raw = scrub(r.raw_text.strip(), real_ids) if pseudonymise else r.raw_text.strip()
        lines += ["Raw model answer:", "", "```", raw, "```", ""]
    if pseudonymise:
        lines += ["The cohort is not marked synthetic: the window and participant are named by pseudonym, "
                  "and no date or hour is shown.", ""]
    return "\n".join(lines)
