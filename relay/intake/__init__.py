"""Relay-side order intake (issue 14, in progress): shop orders to canonical ``in/`` events.

- the canonical order and return (:mod:`relay.intake.order`), what else a mapping can come
  to (:mod:`relay.intake.outcome`), the event identity (:mod:`relay.intake.identity`);
- one mapping per shop (:mod:`~relay.intake.woocommerce`, :mod:`~relay.intake.shopify`,
  :mod:`~relay.intake.prestashop`, :mod:`~relay.intake.magento`) and one API client per shop
  (:mod:`relay.intake.clients`, the :class:`~relay.intake.source.ShopClient` protocol);
- the daemon, ``distillsync intake``: config (:mod:`~relay.intake.config`), webhooks
  (:mod:`~relay.intake.webhooks`), catch-up polls (:mod:`~relay.intake.poller`), what both do
  with an outcome (:mod:`~relay.intake.intake`), the durable store
  (:mod:`~relay.intake.store`), publishing (:mod:`~relay.intake.publisher`), status
  (:mod:`~relay.intake.status`), the parts together (:mod:`~relay.intake.service`).

Returns are not mapped yet.
"""
