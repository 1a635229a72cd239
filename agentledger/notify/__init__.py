"""Outgoing webhooks: people are told when an approval waits, an SLA runs out, a breaker
opens or an agent enters safe mode (docs/notifications.md).

- :mod:`.config`: which webhooks exist, per tenant and queue (``webhooks.yaml``);
- :mod:`.payloads`: what is sent (Slack-compatible or generic JSON) and how it is signed;
- :mod:`.deliveries`: every attempt, recorded on the compacted topic ``agent.webhooks``;
- :mod:`.sender`: one delivery with its retries;
- :mod:`.worker`: the service (``agentledger notify``, run by ``agentledger up``) that
  follows the ledger's topics and turns what happens into deliveries.
"""
