"""Telephony backends behind one small interface: memory, embedded SIP (pyVoIP), Asterisk, Twilio."""
