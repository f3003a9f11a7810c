"""A trivial HTTP endpoint: reads each request whole (headers and body) and answers a fixed small JSON.

``scripts/bench --calibrate`` starts it in a process of its own and loads it like any endpoint: what the load
generator reaches there is its ceiling on this machine, far above what the model servers answer.

    python -m benchlib.trivial PORT
"""

from __future__ import annotations

import asyncio
import sys

ANSWER = b'{"predictions": [{"model": "trivial", "label": 0}]}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)


class Http(asyncio.Protocol):
    """Keep-alive HTTP/1.1 without pipelining surprises: answers every complete request in order."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, bytearray()

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
