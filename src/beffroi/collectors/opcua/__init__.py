"""OPC UA: subscriptions and polling through asyncua, discovery by browsing, security."""
