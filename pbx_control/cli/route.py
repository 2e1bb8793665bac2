"""``pbx-control route CALLER DIALED``: the decision a call would get now, and why.

The support desk's first question. Nothing is written and the caller's rate count is not
touched. Human output masks the real parties (as ``cdr`` does) and shows X in full;
``--json`` gives everything in full.
"""

from __future__ import annotations

import dataclasses

import click

from ..calls import CallService
from ..causes import refusal_for
from ..numbers import mask
from ..routing import Connect, Decision, Facts, Reason
from ..storage.db import utcnow
from .cdr import mask_party
from .context import AppContext, emit_json, pass_app, user_errors

WHY = {
    Reason.UNKNOWN_NUMBER: "the dialed number is not an in-service voice number of the pool",
    Reason.NO_BINDING: "nothing on X is bound for this caller",
    Reason.EXPIRED: "the binding has expired (not swept yet)",
    Reason.DIRECTION_NOT_ALLOWED: "the binding does not allow calls in this direction",
    Reason.WITHHELD: "the caller's number is withheld or unusable, and the binding needs one",
    Reason.BLACKLISTED: "the caller is blacklisted for the customer or on X",
    Reason.RATE_LIMITED: "too many recent attempts by this caller on X",
    Reason.LOOP: "the call would come back to X",
    Reason.NOT_IN_GROUP: "the caller is not in the binding's allow-group",
    Reason.NO_DEFAULT_PARTY: "A called its own X and the binding has no default party",
}


@click.command()
@click.argument("caller")
@click.argument("dialed")
@click.option("--json", "as_json", is_flag=True, help="Print the decision and facts as JSON.")
@pass_app
@user_errors
def route(app: AppContext, caller, dialed, as_json):
    """Show what a call from CALLER to DIALED would get now, and why.

    CALLER may be 'anonymous' (or '') for a withheld caller.
    """
    service = CallService(app.store, app.settings, pbx="cli", node=None, clock=utcnow)
    decision, facts = service.explain(caller, dialed)
    if as_json:
        emit_json({"decision": decision_dict(decision), "facts": facts_dict(facts)})
        return
    click.echo(headline(decision))
    for line in why(facts, app.settings.routing):
        click.echo(f"  {line}")


def headline(decision: Decision) -> str:
    if isinstance(decision, Connect):
        target = decision.to if decision.to_kind == "softphone" else mask_party(decision.to)
        via = f"softphone {target}" if decision.to_kind == "softphone" else target
        binding = f"binding {decision.binding_id}, " if decision.binding_id else ""
        return (f"CONNECT {via} showing {decision.show} ({binding}"
                f"reason {decision.reason.value})")
    refusal = refusal_for(decision.reason)
    binding = f", binding {decision.binding_id}" if decision.binding_id else ""
    why_text = WHY.get(decision.reason, decision.detail or decision.reason.value)
    return (f"REFUSE {decision.reason.value} (SIP {refusal.sip_status}, Q.850 {refusal.q850}"
            f"{binding}): {why_text}")


def why(facts: Facts, policy) -> list[str]:
    number = facts.number
    if number is None:
        return ["X: not in the pool"]
    lines = [f"X: {number.e164} ({number.state.value}, carrier {number.carrier}, "
             f"customer {number.customer_id})"]
    for b in facts.bindings:
        expiry = f"expires {b.expires_at.isoformat()}" if b.expires_at else "no expiry"
        lines.append(f"binding {b.id}: {b.mode.value} A={mask(b.a)}"
                     + (f" B={mask(b.b)}" if b.b else "")
                     + f", direction {b.direction.value}, {expiry}")
    if not facts.bindings:
        lines.append("bindings for this caller on X: none")
    lines.append(f"blacklisted: {'yes' if facts.blacklisted else 'no'}")
    lines.append(f"recent attempts: {facts.recent_attempts} in the last "
                 f"{policy.rate_limit_window_s} s (limit {policy.rate_limit_attempts})")
    return lines


def decision_dict(decision: Decision) -> dict:
    data = dataclasses.asdict(decision) | {"connected": decision.connected}
    if not decision.connected:
        refusal = refusal_for(decision.reason)
        data |= {"sip_status": refusal.sip_status, "q850_cause": refusal.q850}
    return data


def facts_dict(facts: Facts) -> dict:
    data = dataclasses.asdict(facts)
    for binding in data["bindings"]:
        binding["group"] = sorted(binding["group"])
    return data
