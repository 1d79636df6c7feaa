"""TTS engines behind one interface (``base.Engine``), chosen by configuration."""
