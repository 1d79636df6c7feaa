"""The token service: ephemeral, scoped, revocable TTS provider tokens (EdDSA JWTs)."""
