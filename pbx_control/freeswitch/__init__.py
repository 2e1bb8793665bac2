"""The FreeSWITCH adapter: the outbound event-socket server (gevent) that decides and follows
every call on X, the inbound connection for call ends and reconciliation, and a protocol
double built from real FreeSWITCH recordings for tests, the demo and the benchmark."""
