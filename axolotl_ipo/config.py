"""Turns a user's `rl: ipo` config into what the installed Axolotl trains natively.

Runs in `IPOPlugin.register()`, on the raw YAML mapping, before Axolotl validates it, so every
mistake is reported with the key to change before any model is loaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, MutableMapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from axolotl_ipo.args import (
    AUTO_MARGIN_OVER_NLL,
    AUTO_TAU,
    DEFAULT_SFT_WEIGHT_TAU,
    DEFAULT_TAU,
    IPOArgs,
    default_sft_weight,
)
from axolotl_ipo.errors import UserError
from axolotl_ipo.upstream.axolotl import axolotl_version, native_ipo_keys
from axolotl_ipo.upstream.trl import ipo_losses

PLUGIN_KEYS = (
    "ipo_tau",
    "ipo_sft_weight",
    "ipo_guard_rows",
    "ipo_guard_max_rise",
    "ipo_guard_stop",
    "rejection_sampling",
)


class IPOConfigError(UserError):
    """A config mistake, with the key to change and what to write instead."""


def is_active(cfg: MutableMapping) -> bool:
    """Only `rl: ipo` or a plugin key wakes the plugin (Axolotl 0.21 loads it for every config)."""
    return cfg.get("rl") == "ipo" or any(cfg.get(key) is not None for key in PLUGIN_KEYS)


def _is_ipo(cfg: MutableMapping) -> bool:
    """`rl: ipo`, or the native spelling this plugin rewrites it to (a normalised config)."""
    rl = cfg.get("rl")
    rl = getattr(rl, "value", rl)
    losses = list(cfg.get("dpo_loss_type") or [])
    return rl == "ipo" or (rl == "dpo" and losses in (["ipo"], ["ipo", "sft"]))


def _did_you_mean(loc: tuple) -> str:
    """"; did you mean `x`?" for an unknown key close to a known one at the same place."""
    model: Any = IPOArgs
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        kinds = get_args(field.annotation) or (field.annotation,) if field else ()
        models = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not models:
            return ""
        model = models[0]
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _format_validation_error(err: ValidationError) -> str:
    """Every mistake on one line, each naming its key."""
    lines = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "value_error" and message.startswith(("rejection_sampling.", "ipo_")):
            lines.append(message)  # our own validators already name the key and the fix
        else:
            hint = _did_you_mean(item["loc"]) if item["type"] == "extra_forbidden" else ""
            lines.append(f"{key}: {message} (got {item.get('input')!r}){hint}")
    if len(lines) == 1:
        return lines[0]
    return "Invalid axolotl-ipo settings in your config: " + "; ".join(lines)


def _parse_plugin_keys(cfg: MutableMapping) -> IPOArgs:
    raw = {key: cfg.get(key) for key in PLUGIN_KEYS if cfg.get(key) is not None}
    try:
        return IPOArgs(**raw)
    except ValidationError as err:
        raise IPOConfigError(_format_validation_error(err)) from None


def _plain(value: Any) -> Any:
    """A deep copy made of plain dicts and lists. Axolotl's `DictDefault` answers None for any
    missing attribute, so one left nested inside `ipo_sft_datasets` (e.g. an entry's
    `message_property_mappings`) makes pydantic's serializer fail in Axolotl's validation."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_loss_keys(cfg: MutableMapping, native: Mapping[str, Any]) -> None:
    """`dpo_loss_type`/`dpo_loss_weights` may only repeat what `rl: ipo` and `ipo_sft_weight`
    write themselves (a normalised config); anything else is a mixture this plugin does not own."""
    loss_types = cfg.get("dpo_loss_type")
    if loss_types is not None:
        if isinstance(loss_types, str):
            loss_types = [loss_types]
        ours = native.get("dpo_loss_type", ["ipo"])
        others = [loss for loss in loss_types if loss not in ours]
        if not others and list(loss_types) != ours:
            raise IPOConfigError(
                f"dpo_loss_type: {list(loss_types)} differs from what `rl: ipo` trains here "
                f"({ours}). Remove `dpo_loss_type` (rl: ipo sets it; `ipo_sft_weight` weighs "
                "the NLL term, `ipo_sft_weight: 0` is pure IPO)."
            )
        if others:
            raise IPOConfigError(
                f"dpo_loss_type: {list(loss_types)} mixes other losses into `rl: ipo`. "
                "Remove `dpo_loss_type` (rl: ipo sets it; `ipo_sft_weight: 0.1` adds TRL's sft "
                "loss), or train a mixture with `rl: dpo` and `dpo_loss_type`/`dpo_loss_weights` "
                "without this plugin."
            )
    weights = cfg.get("dpo_loss_weights")
    if weights is not None and list(weights) != native.get("dpo_loss_weights"):
        raise IPOConfigError(
            f"dpo_loss_weights: {list(weights)} cannot be used with `rl: ipo`: remove it and set "
            "`ipo_sft_weight` (the weight of the SFT term; IPO's weight is 1)."
        )
    if cfg.get("dpo_label_smoothing"):
        raise IPOConfigError(
            f"dpo_label_smoothing: {cfg.get('dpo_label_smoothing')} cannot be used with IPO "
            "(TRL's IPO loss has no label smoothing). Remove `dpo_label_smoothing`; "
            "`ipo_tau` is IPO's own regulariser."
        )


def _resolve_tau(cfg: MutableMapping, args: IPOArgs) -> float | str:
    """tau as written (`ipo_tau`, else `rl_beta`/`dpo_beta`/`trl.beta`), else `auto`."""
    trl_cfg = cfg.get("trl") or {}
    betas = {
        key: value
        for key, value in (
            ("rl_beta", cfg.get("rl_beta")),
            ("dpo_beta", cfg.get("dpo_beta")),
            ("trl.beta", trl_cfg.get("beta") if isinstance(trl_cfg, dict) else None),
        )
        if value is not None
    }
    if args.ipo_tau == AUTO_TAU:
        if betas:
            key, value = next(iter(betas.items()))
            raise IPOConfigError(
                f"ipo_tau: {AUTO_TAU} and {key}: {value} disagree; both set IPO's tau (TRL's "
                f"beta). Keep one: remove `{key}`, or write its value as `ipo_tau`."
            )
        return AUTO_TAU
    if args.ipo_tau is not None:  # > 0: IPOArgs checks it
        for key, value in betas.items():
            if float(value) != float(args.ipo_tau):
                raise IPOConfigError(
                    f"ipo_tau: {args.ipo_tau} and {key}: {value} disagree; both set IPO's "
                    f"tau (TRL's beta). Keep only `ipo_tau` (remove `{key}`)."
                )
        return float(args.ipo_tau)
    if len(set(map(float, betas.values()))) > 1:
        raise IPOConfigError(
            f"{betas} disagree; each sets IPO's tau. Keep one, preferably `ipo_tau`."
        )
    for key, value in betas.items():
        if float(value) <= 0:
            raise IPOConfigError(f"{key} must be > 0 for IPO, got {value}; write `ipo_tau: 0.1`.")
        return float(value)
    return AUTO_TAU


def _resolve_sft_weight(cfg: MutableMapping, args: IPOArgs, tau: float | str) -> float | None:
    """`ipo_sft_weight` as written; unset, 0 where the config spells pure IPO natively
    (`dpo_loss_type: [ipo]`), else the default 2/tau: None with `ipo_tau: auto` (it follows
    the tau measured at step 0)."""
    if args.ipo_sft_weight is not None:
        return float(args.ipo_sft_weight)
    if cfg.get("dpo_loss_type") in (["ipo"], "ipo"):
        return 0.0
    return None if tau == AUTO_TAU else default_sft_weight(float(tau))


def is_auto_tau(cfg: Mapping[str, Any]) -> bool:
    """A normalised config whose tau is measured at step 0 (`ipo_tau: auto`)."""
    return cfg.get("ipo_tau") == AUTO_TAU


def loss_settings(cfg: Mapping[str, Any]) -> tuple[float, float]:
    """(tau, ipo_sft_weight) a normalised config trains with before step 0: with `ipo_tau:
    auto`, DEFAULT_TAU and its default weight until the measurement replaces them."""
    tau = DEFAULT_TAU if is_auto_tau(cfg) else float(cfg["ipo_tau"])
    weight = cfg.get("ipo_sft_weight")
    return tau, default_sft_weight(tau) if weight is None else float(weight)


def normalise(cfg: MutableMapping) -> MutableMapping:
    """Validate the plugin's keys and rewrite `rl: ipo` in place. Inactive configs are untouched.

    Idempotent: normalising a normalised config changes nothing.
    """
    if not is_active(cfg):
        return cfg
    args = _parse_plugin_keys(cfg)
    rl = cfg.get("rl")
    if not _is_ipo(cfg):
        set_keys = [key for key in PLUGIN_KEYS if cfg.get(key) is not None]
        raise IPOConfigError(
            f"{', '.join(set_keys)} set but `rl: {rl}`: axolotl-ipo only drives IPO. "
            "Add `rl: ipo` to your config, or remove these keys."
        )
    tau = _resolve_tau(cfg, args)
    sft_weight = _resolve_sft_weight(cfg, args, tau)
    start_tau = DEFAULT_TAU if tau == AUTO_TAU else tau
    native = native_ipo_keys(default_sft_weight(start_tau) if sft_weight is None else sft_weight)
    _check_loss_keys(cfg, native)

    if cfg.get("datasets") is not None and cfg.get("ipo_sft_datasets") is None:
        cfg["ipo_sft_datasets"] = [_plain(ds) for ds in cfg["datasets"]]
    cfg.pop("dpo_beta", None)
    cfg["rl_beta"] = None if tau == AUTO_TAU else tau
    cfg["ipo_tau"] = tau
    cfg["ipo_sft_weight"] = sft_weight
    cfg.update(native)
    return cfg


def trainer_loss_args(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """TRL training arguments for IPO [+ alpha * SFT] with beta = tau, whatever the release
    (with `ipo_tau: auto`, the values it starts from; step 0 sets the measured ones)."""
    tau, weight = loss_settings(cfg)
    return {**ipo_losses(weight), "beta": tau}


def resolved_settings(cfg: MutableMapping) -> dict[str, Any]:
    """What a normalised (and Axolotl-validated) config will train with, for `axolotl-ipo check`."""
    rl = cfg.get("rl")
    rl = getattr(rl, "value", rl)
    if is_auto_tau(cfg):
        weight = cfg.get("ipo_sft_weight")
        weight = f"{DEFAULT_SFT_WEIGHT_TAU:g}/tau" if weight is None else weight
        tau = f"{AUTO_TAU}: set at step 0 from the held-out gold NLL/token"
        margin = f"held-out gold NLL/token at step 0 + {AUTO_MARGIN_OVER_NLL:g}"
    else:
        weight, tau = cfg.get("ipo_sft_weight") or 0.0, cfg.get("rl_beta")
        margin = None if tau is None else 1.0 / (2.0 * float(tau))
    return {
        "axolotl": axolotl_version(),
        "rl": rl,
        "dpo_loss_type": cfg.get("dpo_loss_type"),
        "ipo_sft_weight": weight,
        "ipo_tau (beta)": tau,
        "ipo_target_margin 1/(2*tau)": margin,
    }
