#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json from the panel lists below (stdlib only).

The JSON files are generated: edit this file, then run `python3 grafana/build_dashboards.py`.
`--check` exits 1 when a JSON file differs from what this script would write (scripts/check-grafana runs it).

Conventions every panel follows (scripts/check-grafana checks them):
  * datasource `{"type": "prometheus", "uid": "${DS_PROMETHEUS}"}` on the panel and on each target;
  * rate windows are `[$__rate_interval]`, and no other Grafana variable appears in an expression;
  * a counter that may not exist yet (a failure kind that has not happened) falls back to 0:
    `sum(...) or vector(0)`, or `sum by (...) (...) or on() vector(0)` when grouped (`on()` so that the 0 is
    added only when there is no series at all).
"""

import json
import sys
from pathlib import Path

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
RI = "[$__rate_interval]"
OUT = Path(__file__).resolve().parent / "dashboards"


# ---------------------------------------------------------------------------------------------------------
# PromQL helpers


def rate(metric, selector="", by=None):
    """`sum [by (...)] (rate(metric{selector}[$__rate_interval]))`."""
    inner = f"rate({metric}{selector}{RI})"
    if by:
        return f"sum by ({by}) ({inner})"
    return f"sum({inner})"


def quantile(q, histogram, by=None, selector=""):
    labels = "le" if not by else f"le, {by}"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{selector}{RI})))"


def mean(histogram):
    return f"{rate(histogram + '_sum')} / {rate(histogram + '_count')}"


def or_zero(expr, grouped):
    return f"{expr} or on() vector(0)" if grouped else f"{expr} or vector(0)"


def per_db(fn):
    """The store's metric for PostgreSQL or, with the embedded store, SQLite, with a `db` label."""
    return " or ".join(f'label_replace({fn(db)}, "db", "{db}", "", "")' for db in ("postgres", "sqlite"))


# ---------------------------------------------------------------------------------------------------------
# Panel helpers


def target(expr, legend="", ref="A"):
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": True,
        "refId": ref,
    }


def targets(*pairs):
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def _panel(kind, title, description, tgts, w, h, field_defaults, options, overrides=None):
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "options": options,
        "targets": tgts,
    }


def timeseries(title, description, tgts, unit="short", w=12, h=8, overrides=None, min0=True):
    defaults = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "fillOpacity": 10,
            "gradientMode": "none",
            "showPoints": "never",
            "spanNulls": False,
            "axisPlacement": "auto",
            "axisSoftMin": 0 if min0 else None,
            "stacking": {"group": "A", "mode": "none"},
            "thresholdsStyle": {"mode": "off"},
        },
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
        "mappings": [],
    }
    if not min0:
        del defaults["custom"]["axisSoftMin"]
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, description, tgts, w, h, defaults, options, overrides)


def stat(title, description, expr, unit="short", steps=None, w=6, h=4, decimals=None):
    defaults = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": steps or [{"color": "green", "value": None}]},
        "mappings": [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return _panel("stat", title, description, [target(expr, title)], w, h, defaults, options)


def bargauge(title, description, tgts, unit="percentunit", w=12, h=8):
    defaults = {
        "unit": unit,
        "min": 0,
        "max": 1,
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [
                {"color": "red", "value": None},
                {"color": "orange", "value": 0.1},
                {"color": "green", "value": 0.25},
            ],
        },
        "mappings": [],
    }
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
        "minVizHeight": 10,
        "minVizWidth": 0,
        "valueMode": "color",
    }
    return _panel("bargauge", title, description, tgts, w, h, defaults, options)


STATE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"index": 0, "text": "healthy", "color": "green"},
            "1": {"index": 1, "text": "partial outage", "color": "yellow"},
            "2": {"index": 2, "text": "complete outage", "color": "red"},
        },
    }
]


def state_timeline(title, description, tgts, w=24, h=9):
    defaults = {
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [
                {"color": "green", "value": None},
                {"color": "yellow", "value": 1},
                {"color": "red", "value": 2},
            ],
        },
        "mappings": STATE_MAPPINGS,
        "min": 0,
        "max": 2,
        "custom": {"fillOpacity": 80, "lineWidth": 0, "spanNulls": False},
    }
    options = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return _panel("state-timeline", title, description, tgts, w, h, defaults, options)


def color_override(legend, color):
    return {
        "matcher": {"id": "byName", "options": legend},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
    }


def dashboard(uid, title, description, panels):
    """Lays panels out left to right, wrapping at 24 columns, and numbers them."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llm", "prometheus"],
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "liveNow": False,
        "links": [
            {
                "type": "dashboards",
                "title": "LLM dashboards",
                "tags": ["llm"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": []},
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                    "skipUrlSync": False,
                }
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "30m", "1h"]},
        "timezone": "browser",
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------------------------------------------------
# Dashboards

TOTAL_REQ = "llm_proxy_total_requests_metric_total"
FAILED_REQ = "llm_proxy_failed_requests_metric_total"
TOTAL_LAT = "llm_request_total_latency_metric"
API_LAT = "llm_llm_api_latency_metric"
OVERHEAD_LAT = "llm_overhead_latency_metric"
TTFT = "llm_llm_api_time_to_first_token_metric"
REJECTED = '{exception_class=~"BudgetExceededError|RateLimitError"}'

FAILURE_RATIO = f"({rate(FAILED_REQ)} or vector(0)) / {rate(TOTAL_REQ)}"


def latency_quantile_panel(q):
    pct = f"p{round(q * 100)}"
    return timeseries(
        f"Latency {pct}: total vs LLM API vs overhead",
        f"{pct} over successful requests of the whole request as the proxy served it "
        f"(`{TOTAL_LAT}`), of the upstream LLM call alone (`{API_LAT}`) and of what the proxy added "
        f"(`{OVERHEAD_LAT}` = total - LLM API).",
        targets(
            (quantile(q, TOTAL_LAT), f"total {pct}"),
            (quantile(q, API_LAT), f"LLM API {pct}"),
            (quantile(q, OVERHEAD_LAT), f"overhead {pct}"),
        ),
        unit="s",
        w=8,
    )


def overview():
    return dashboard(
        "llm-proxy-overview",
        "LLM Proxy / Overview",
        "Client-side traffic of the gateway: requests, failures, latency, time to first token, tokens and spend.",
        [
            stat(
                "Requests per second",
                f"All requests answered by the proxy, success and failure (`{TOTAL_REQ}`).",
                rate(TOTAL_REQ),
                unit="reqps",
            ),
            stat(
                "Failure ratio",
                f"Failed / total proxy requests (`{FAILED_REQ}` / `{TOTAL_REQ}`); the LLMHighFailureRatio alert "
                "fires above 5% over 5m.",
                FAILURE_RATIO,
                unit="percentunit",
                steps=[
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 0.01},
                    {"color": "red", "value": 0.05},
                ],
            ),
            stat(
                "Request latency p95",
                f"p95 of the total request latency (`{TOTAL_LAT}`), successful requests.",
                quantile(0.95, TOTAL_LAT),
                unit="s",
            ),
            stat(
                "Spend per hour",
                "Spend rate of all requests, in USD per hour (`llm_spend_metric`).",
                f"{rate('llm_spend_metric_total')} * 3600",
                unit="currencyUSD",
                decimals=4,
            ),
            timeseries(
                "Requests per second (success / failure)",
                f"Proxy requests per second: successes are `{TOTAL_REQ}` with a 2xx `status_code`, failures are "
                f"`{FAILED_REQ}` (the client did not get a success response).",
                targets(
                    (rate(TOTAL_REQ), "total"),
                    (or_zero(rate(TOTAL_REQ, '{status_code=~"2.."}'), False), "success"),
                    (or_zero(rate(FAILED_REQ), False), "failure"),
                ),
                unit="reqps",
                overrides=[color_override("success", "green"), color_override("failure", "red")],
            ),
            timeseries(
                "Failures per second by exception class",
                f"`{FAILED_REQ}` by `exception_class` and `exception_status`. Upstream errors carry the "
                "provider prefix (`Openai.RateLimitError`); the gateway's own rejections do not "
                "(`BudgetExceededError`, `RateLimitError`).",
                targets(
                    (
                        or_zero(rate(FAILED_REQ, by="exception_class, exception_status"), True),
                        "{{exception_class}} {{exception_status}}",
                    )
                ),
                unit="reqps",
            ),
            latency_quantile_panel(0.5),
            latency_quantile_panel(0.95),
            latency_quantile_panel(0.99),
            timeseries(
                "Mean latency: total vs LLM API vs overhead",
                "Average seconds per successful request (histogram sum / count).",
                targets(
                    (mean(TOTAL_LAT), "total"),
                    (mean(API_LAT), "LLM API"),
                    (mean(OVERHEAD_LAT), "overhead"),
                ),
                unit="s",
            ),
            timeseries(
                "Request latency p95 by model",
                f"p95 of `{TOTAL_LAT}` per deployment model (`model`).",
                targets((quantile(0.95, TOTAL_LAT, by="model"), "{{model}}")),
                unit="s",
            ),
            timeseries(
                "Time to first token p50 / p95 / p99 (streaming)",
                f"Time to the first streamed token (`{TTFT}`); only streaming requests record it.",
                targets(
                    (quantile(0.5, TTFT), "p50"),
                    (quantile(0.95, TTFT), "p95"),
                    (quantile(0.99, TTFT), "p99"),
                ),
                unit="s",
            ),
            timeseries(
                "Requests per second by requested model",
                f"`{TOTAL_REQ}` by the model the client asked for (`requested_model`; `other` for unknown models).",
                targets((rate(TOTAL_REQ, by="requested_model"), "{{requested_model}}")),
                unit="reqps",
            ),
            timeseries(
                "Tokens per second (input / output)",
                "Prompt tokens (`llm_input_tokens`) and completion tokens (`llm_output_tokens`) per second.",
                targets(
                    (rate("llm_input_tokens_total"), "input"),
                    (rate("llm_output_tokens_total"), "output"),
                ),
            ),
            timeseries(
                "Tokens per second by model",
                "Input + output tokens (`llm_total_tokens`) per second, by deployment model.",
                targets((rate("llm_total_tokens_total", by="model"), "{{model}}")),
            ),
            timeseries(
                "Spend per hour (USD)",
                "Spend rate of all requests (`llm_spend_metric`), in USD per hour.",
                targets((f"{rate('llm_spend_metric_total')} * 3600", "spend / h")),
                unit="currencyUSD",
            ),
            timeseries(
                "Spend per hour by model (USD)",
                "Spend rate by deployment model, in USD per hour.",
                targets((f"{rate('llm_spend_metric_total', by='model')} * 3600", "{{model}}")),
                unit="currencyUSD",
            ),
        ],
    )


def keys_teams():
    def by_alias(metric, alias, legend, unit, what, scale=""):
        return timeseries(
            f"{what} by {alias.replace('_', ' ').replace('api ', '')}",
            f"`{metric}` by `{alias}` (empty for requests without a key alias / team).",
            targets((f"{rate(metric, by=alias)}{scale}", legend)),
            unit=unit,
        )

    return dashboard(
        "llm-keys-teams",
        "LLM Proxy / Keys and teams",
        "Spend, tokens, budgets, rate limits and rejections per virtual key and team.",
        [
            by_alias("llm_spend_metric_total", "api_key_alias", "{{api_key_alias}}", "currencyUSD",
                     "Spend per hour (USD)", " * 3600"),
            by_alias("llm_spend_metric_total", "team_alias", "{{team_alias}}", "currencyUSD",
                     "Spend per hour (USD)", " * 3600"),
            by_alias("llm_total_tokens_total", "api_key_alias", "{{api_key_alias}}", "short",
                     "Tokens per second"),
            by_alias("llm_total_tokens_total", "team_alias", "{{team_alias}}", "short", "Tokens per second"),
            by_alias(TOTAL_REQ, "api_key_alias", "{{api_key_alias}}", "reqps", "Requests per second"),
            by_alias(TOTAL_REQ, "team_alias", "{{team_alias}}", "reqps", "Requests per second"),
            timeseries(
                "Remaining budget by key (USD)",
                "`llm_remaining_api_key_budget_metric` for keys with a max budget (without one it is +Inf). "
                "Negative when overspent.",
                targets(
                    (
                        "llm_remaining_api_key_budget_metric and llm_api_key_max_budget_metric",
                        "{{api_key_alias}}",
                    )
                ),
                unit="currencyUSD",
                min0=False,
            ),
            timeseries(
                "Remaining budget by team (USD)",
                "`llm_remaining_team_budget_metric` for teams with a max budget (without one it is +Inf). "
                "Negative when overspent.",
                targets(("llm_remaining_team_budget_metric and llm_team_max_budget_metric", "{{team_alias}}")),
                unit="currencyUSD",
                min0=False,
            ),
            bargauge(
                "Budget left by key (%)",
                "Remaining / max budget per key with a max budget > 0; LLMKeyBudgetLow fires below 10%.",
                targets(
                    (
                        "llm_remaining_api_key_budget_metric / (llm_api_key_max_budget_metric > 0)",
                        "{{api_key_alias}}",
                    )
                ),
            ),
            bargauge(
                "Budget left by team (%)",
                "Remaining / max budget per team with a max budget > 0; LLMTeamBudgetLow fires below 10%.",
                targets(
                    ("llm_remaining_team_budget_metric / (llm_team_max_budget_metric > 0)", "{{team_alias}}")
                ),
            ),
            timeseries(
                "Hours until key budget reset",
                "`llm_api_key_budget_remaining_hours_metric`, for keys with a budget duration.",
                targets(("llm_api_key_budget_remaining_hours_metric", "{{api_key_alias}}")),
                unit="h",
            ),
            timeseries(
                "Hours until team budget reset",
                "`llm_team_budget_remaining_hours_metric`, for teams with a budget duration.",
                targets(("llm_team_budget_remaining_hours_metric", "{{team_alias}}")),
                unit="h",
            ),
            timeseries(
                "Remaining requests per key and model (rpm limit)",
                "`llm_remaining_api_key_requests_for_model`: requests the key may still make for the model in "
                "the current minute; only keys with a model-specific rpm limit.",
                targets(
                    (
                        "min by (api_key_alias, model) (llm_remaining_api_key_requests_for_model)",
                        "{{api_key_alias}} / {{model}}",
                    )
                ),
            ),
            timeseries(
                "Remaining tokens per key and model (tpm limit)",
                "`llm_remaining_api_key_tokens_for_model`: tokens the key may still use for the model in the "
                "current minute; only keys with a model-specific tpm limit.",
                targets(
                    (
                        "min by (api_key_alias, model) (llm_remaining_api_key_tokens_for_model)",
                        "{{api_key_alias}} / {{model}}",
                    )
                ),
            ),
            timeseries(
                "Requests rejected for budget or limits",
                f"`{FAILED_REQ}` with `exception_class` BudgetExceededError (400) or RateLimitError (429): the "
                "gateway's own rejections (upstream errors carry a provider prefix).",
                targets(
                    (
                        or_zero(rate(FAILED_REQ, REJECTED, by="exception_class, exception_status"), True),
                        "{{exception_class}} {{exception_status}}",
                    )
                ),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Rejections by key alias",
                "Budget and rate-limit rejections per second, by key alias.",
                targets(
                    (
                        or_zero(rate(FAILED_REQ, REJECTED, by="api_key_alias, exception_class"), True),
                        "{{api_key_alias}} {{exception_class}}",
                    )
                ),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Rejections by team alias",
                "Budget and rate-limit rejections per second, by team alias.",
                targets(
                    (
                        or_zero(rate(FAILED_REQ, REJECTED, by="team_alias, exception_class"), True),
                        "{{team_alias}} {{exception_class}}",
                    )
                ),
                unit="reqps",
                w=8,
            ),
        ],
    )


def deployments():
    dep = "llm_model_name, api_base, model_id"
    dep_legend = "{{llm_model_name}} @ {{api_base}} ({{model_id}})"
    return dashboard(
        "llm-deployments",
        "LLM Proxy / Deployments",
        "Upstream deployments: health state, successes and failures, cool-downs, fallbacks, provider rate "
        "limits and latency per output token.",
        [
            state_timeline(
                "Deployment state",
                "`llm_deployment_state` per deployment: 0 healthy, 1 partial outage (a recent failure), "
                "2 complete outage (cooling down). LLMDeploymentCompleteOutage fires after 2m at 2.",
                targets((f"max by ({dep}) (llm_deployment_state)", dep_legend)),
            ),
            timeseries(
                "Successful LLM API calls per second by deployment",
                "`llm_deployment_success_responses` per deployment.",
                targets((rate("llm_deployment_success_responses_total", by=dep), dep_legend)),
                unit="reqps",
            ),
            timeseries(
                "Failed LLM API calls per second by deployment",
                "`llm_deployment_failure_responses` per deployment and error.",
                targets(
                    (
                        or_zero(
                            rate(
                                "llm_deployment_failure_responses_total",
                                by="llm_model_name, api_base, exception_status, exception_class",
                            ),
                            True,
                        ),
                        "{{llm_model_name}} @ {{api_base}}: {{exception_status}} {{exception_class}}",
                    )
                ),
                unit="reqps",
            ),
            timeseries(
                "Failure ratio by deployment",
                "Failed / total LLM API calls per deployment (0 for deployments without failures).",
                targets(
                    (
                        f"({rate('llm_deployment_failure_responses_total', by=dep)} "
                        f"or {rate('llm_deployment_total_requests_total', by=dep)} * 0) "
                        f"/ {rate('llm_deployment_total_requests_total', by=dep)}",
                        dep_legend,
                    )
                ),
                unit="percentunit",
            ),
            timeseries(
                "Cool-downs per second by model and status",
                "`llm_deployment_cooled_down`: deployments taken out of rotation, by the status of the failure "
                "that started the cool-down.",
                targets(
                    (
                        or_zero(rate("llm_deployment_cooled_down_total", by="llm_model_name, exception_status"), True),
                        "{{llm_model_name}} {{exception_status}}",
                    )
                ),
                unit="reqps",
            ),
            timeseries(
                "Successful fallbacks per second (from → to)",
                "`llm_deployment_successful_fallbacks`: requests whose model group failed and that a fallback "
                "group answered.",
                targets(
                    (
                        or_zero(
                            rate("llm_deployment_successful_fallbacks_total", by="requested_model, fallback_model"),
                            True,
                        ),
                        "{{requested_model}} → {{fallback_model}}",
                    )
                ),
                unit="reqps",
            ),
            timeseries(
                "Failed fallbacks per second (from → to)",
                "`llm_deployment_failed_fallbacks`: fallback groups tried that failed too; LLMFallbacksFailing "
                "fires on any.",
                targets(
                    (
                        or_zero(
                            rate("llm_deployment_failed_fallbacks_total", by="requested_model, fallback_model"),
                            True,
                        ),
                        "{{requested_model}} → {{fallback_model}}",
                    )
                ),
                unit="reqps",
            ),
            timeseries(
                "Fallbacks per second by cause",
                "Successful and failed fallbacks by the requested group's failure that triggered them.",
                targets(
                    (
                        or_zero(
                            rate(
                                "llm_deployment_successful_fallbacks_total",
                                by="exception_status, exception_class",
                            ),
                            True,
                        ),
                        "ok: {{exception_status}} {{exception_class}}",
                    ),
                    (
                        or_zero(
                            rate("llm_deployment_failed_fallbacks_total", by="exception_status, exception_class"),
                            True,
                        ),
                        "failed: {{exception_status}} {{exception_class}}",
                    ),
                ),
                unit="reqps",
            ),
            timeseries(
                "Remaining upstream requests (x-ratelimit-remaining-requests)",
                "`llm_remaining_requests_metric`: the last `x-ratelimit-remaining-requests` header of each "
                "deployment's provider.",
                targets(
                    (
                        "min by (model_group, llm_model_name, api_base) (llm_remaining_requests_metric)",
                        "{{model_group}}: {{llm_model_name}} @ {{api_base}}",
                    )
                ),
            ),
            timeseries(
                "Remaining upstream tokens (x-ratelimit-remaining-tokens)",
                "`llm_remaining_tokens`: the last `x-ratelimit-remaining-tokens` header of each deployment's "
                "provider.",
                targets(
                    (
                        "min by (model_group, llm_model_name, api_base) (llm_remaining_tokens)",
                        "{{model_group}}: {{llm_model_name}} @ {{api_base}}",
                    )
                ),
            ),
            timeseries(
                "Latency per output token p50 / p95 by deployment",
                "`llm_deployment_latency_per_output_token`: upstream call duration / completion tokens.",
                targets(
                    (
                        quantile(0.5, "llm_deployment_latency_per_output_token", by="llm_model_name, api_base"),
                        "p50 {{llm_model_name}} @ {{api_base}}",
                    ),
                    (
                        quantile(0.95, "llm_deployment_latency_per_output_token", by="llm_model_name, api_base"),
                        "p95 {{llm_model_name}} @ {{api_base}}",
                    ),
                ),
                unit="s",
            ),
            timeseries(
                "LLM API latency p95 by model",
                f"p95 of `{API_LAT}` by deployment model.",
                targets((quantile(0.95, API_LAT, by="model"), "{{model}}")),
                unit="s",
            ),
        ],
    )


def system_health():
    return dashboard(
        "llm-system-health",
        "LLM Proxy / System health",
        "Services next to the gateway (needs `llm_settings.service_callback: [\"prometheus_system\"]`): Redis, "
        "the database and the upstream LLM calls themselves (`self`).",
        [
            timeseries(
                "Redis latency p50 / p99",
                "`llm_redis_latency`: successful Redis calls.",
                targets(
                    (quantile(0.5, "llm_redis_latency"), "p50"),
                    (quantile(0.99, "llm_redis_latency"), "p99"),
                ),
                unit="s",
                w=8,
            ),
            timeseries(
                "Redis calls per second",
                "`llm_redis_total_requests`: every Redis call, successful or not.",
                targets((rate("llm_redis_total_requests_total"), "calls")),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Redis failures per second",
                "`llm_redis_fails` by error class and call; absent until a Redis call fails. LLMRedisFailures "
                "fires on any.",
                targets(
                    (
                        or_zero(rate("llm_redis_fails_total", by="error_class, function_name"), True),
                        "{{function_name}}: {{error_class}}",
                    )
                ),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Database latency p50 / p99",
                "`llm_postgres_latency` (or `llm_sqlite_latency` with the embedded store): successful database "
                "calls.",
                targets(
                    (per_db(lambda db: quantile(0.5, f"llm_{db}_latency")), "{{db}} p50"),
                    (per_db(lambda db: quantile(0.99, f"llm_{db}_latency")), "{{db}} p99"),
                ),
                unit="s",
                w=8,
            ),
            timeseries(
                "Database calls per second",
                "`llm_postgres_total_requests` (or `llm_sqlite_total_requests`): every database call.",
                targets((per_db(lambda db: rate(f"llm_{db}_total_requests_total")), "{{db}}")),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Database failures per second",
                "`llm_postgres_fails` (or `llm_sqlite_fails`) by error class and call; absent until a database "
                "call fails.",
                targets(
                    (
                        or_zero(
                            per_db(lambda db: rate(f"llm_{db}_fails_total", by="error_class, function_name")), True
                        ),
                        "{{db}} {{function_name}}: {{error_class}}",
                    )
                ),
                unit="reqps",
                w=8,
            ),
            timeseries(
                "Self latency p50 / p95 / p99 (upstream LLM calls)",
                "`llm_self_latency`: duration of each successful upstream LLM call.",
                targets(
                    (quantile(0.5, "llm_self_latency"), "p50"),
                    (quantile(0.95, "llm_self_latency"), "p95"),
                    (quantile(0.99, "llm_self_latency"), "p99"),
                ),
                unit="s",
            ),
            timeseries(
                "Self calls per second",
                "`llm_self_total_requests`: upstream LLM calls counted by the system-health callback.",
                targets((rate("llm_self_total_requests_total"), "calls")),
                unit="reqps",
            ),
        ],
    )


DASHBOARDS = {
    "llm-proxy-overview.json": overview,
    "llm-keys-teams.json": keys_teams,
    "llm-deployments.json": deployments,
    "llm-system-health.json": system_health,
}


def render(build):
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("dashboards differ from grafana/build_dashboards.py (run it): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
