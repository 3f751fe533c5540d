"""Relay-side order intake (issue 14, in progress): shop orders to canonical ``in/`` events.

So far: the canonical order (:mod:`relay.intake.order`), the event identity
(:mod:`relay.intake.identity`) and the WooCommerce mapping (:mod:`relay.intake.woocommerce`).
Webhooks, polls, the intake store and publishing are still to come.
"""
