"""The in-browser softphone's server side: aiortc sessions per agent, bridged to the caller's RTP leg.

See ``docs/console.md`` (WebRTC section) for the design and deployment notes.
"""
