"""Call recordings, their transcription and search, retention and access control."""
