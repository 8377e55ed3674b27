"""Domain vocabulary shared by every part: ids, call and agent states, events, errors, CallContext."""
