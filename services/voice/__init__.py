"""The voice service: text to speech with visemes and word marks on the audio's own clock."""
