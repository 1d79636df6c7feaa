"""What the report says beside the figures: how misses were profiled, what was fixed, and
what still limits each figure. The numbers quoted here come from the profiling runs named."""

NOTES: list[str] = [
    "Profiling: cProfile from the standard library (py-spy is not installed). "
    "`python -m bench.profiled services.<name> OUT.pstats` runs any service under it (the "
    "bench's Mesh takes `profile={name: file}`), and `python -m bench --profile FILE` profiles "
    "the stream server during the latency runs. cProfile roughly halves throughput; it was "
    "used to find where time goes, never for the figures.",
    "Fix (e), VerifyProviderToken and every mesh RPC: a profile of the token service under "
    "VerifyProviderToken load (16 in flight) showed JWT decoding at 1.85 s of 3.9 s of RPC "
    "time: two decodes per call (the caller's service token in the interceptor, the provider "
    "token in the codec), most of it PyJWT's per-character base64 alphabet check (5 million "
    "generator steps for 5,880 decodes). `services.common.auth.VerifiedTokens` remembers "
    "tokens that passed, per verifier, and serves them again only while exp/nbf/iat still "
    "pass with the verifier's leeway; anything else is decoded from scratch, so every "
    "refusal and its reason are unchanged (the signature, issuer and audience verdicts depend "
    "only on the token text and the verifier's fixed keys). Used by JwtAuthority (all four "
    "services) and the token codec (the key ring is fixed for a codec's life). Measured: "
    "VerifyProviderToken 690 calls/s before (quick run, ratio 0.37) and about 1,500 calls/s "
    "after in an isolated run; the other RPCs gain less because they are dominated by I/O.",
    "(e) CreateRoom, GetRoom, IssueProviderToken: profiles of rooms and avatar under GetRoom "
    "load show both processes mostly idle (rooms spent 8.7 s of 12 s in epoll): these calls "
    "are bound by the latency of their fan-out, not by CPU. GetRoom is one SQL transaction "
    "plus GetAgent and GetAvatar on the avatar service (each a SQL session: pool pre-ping, "
    "BEGIN, SELECT, ROLLBACK round trips to PostgreSQL); CreateRoom adds a GetAgent before "
    "the insert; IssueProviderToken asks rooms (which asks avatar) and avatar, then inserts "
    "the token and its audit row. A single sequential GetRoom took 12 ms median against 2.7 "
    "ms for GetAgent alone. Caching agent summaries in rooms would remove most of it but "
    "changes what GetRoom returns (a summary could be stale), so it is left as a design "
    "decision rather than a performance fix.",
    "(a) and (b): the stream server has no single hot spot. Per delta it runs the provider's "
    "deadline wrapper, Generation._next (two tasks and an asyncio.wait per delta so an "
    "interrupt cancels a pending read: about 12% of its CPU), the marker parser (below 2%), "
    "the sentence accumulator and speech cues, a protobuf build and serialisation, a bus "
    "publish, then per subscriber a pump that reads and decodes the event again, a bounded "
    "queue, two generator layers (servicer and interceptor) and grpc's own write. About a "
    "quarter of its CPU is inside grpc's Cython/C core writing messages. The echo floor "
    "writes pre-serialised bytes and does nothing else, so S/E measures the whole pipeline. "
    "Next candidates: one stop-waiter per reply instead of two tasks per delta; handing "
    "decoded events to in-process subscribers; writing a chunk and its cue together.",
    "(b) at 200 conversations, every conversation streams replies back to back at 30 ms "
    "pacing: about 6,700 deltas/s plus speech cues into one Python event loop, on 2 cores "
    "shared with the client, the other services and PostgreSQL (and Redis for the Redis "
    "rows). The stream server saturates one core, so the tail is queueing; the echo floor's "
    "own p99 at the same load shows how much of it grpc.aio alone costs on this machine. "
    "Scaling out is the design's answer: more stream replicas behind Envoy on the Redis bus.",
    "(f): whole replies pass. Streamed replies are bound by Python's per-call cost: a feed "
    "of a ~4-character delta that returns a chunk costs about 1.7 us, and 10 MB/s at 4 "
    "characters per delta would need 0.4 us per call. In the service the parser is below 2% "
    "of the stream server's CPU (profile above), so it does not limit (a) or (b).",
    "Other work was running on the machine during development (another test suite at 100% "
    "of one core at times); the interleaved rounds put such noise on both sides of each "
    "ratio, and the min-max shows how much it moved a figure.",
]
