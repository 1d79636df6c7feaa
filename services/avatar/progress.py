"""In-process fan-out of avatar progress to WatchAvatar streams, one bounded queue each."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from services.avatar.domain import AvatarRecord

QUEUE_SIZE = 8


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[AvatarRecord] = asyncio.Queue(QUEUE_SIZE)

    def offer(self, record: AvatarRecord) -> None:
        # Progress is a snapshot: a slow watcher skips intermediate states but always gets
        # the latest one, and never slows the job or the other watchers.
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(record)


class ProgressBroadcaster:
    def __init__(self) -> None:
        self._subs: defaultdict[str, set[Subscription]] = defaultdict(set)

    @contextlib.contextmanager
    def subscribe(self, agent_id: str) -> Iterator[Subscription]:
        sub = Subscription()
        self._subs[agent_id].add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(agent_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[agent_id]

    def publish(self, record: AvatarRecord) -> None:
        for sub in tuple(self._subs.get(record.agent_id, ())):
            sub.offer(record)

    def watchers(self, agent_id: str) -> int:
        return len(self._subs.get(agent_id, ()))
