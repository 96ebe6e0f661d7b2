"""The second factor: authenticator apps, recovery codes, throttling of
wrong codes and verified sessions."""
