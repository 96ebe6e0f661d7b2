"""The web server's own listening socket: keep-alive responses must not
wait for a delayed ACK."""

from __future__ import annotations

import asyncio
import socket

from mailflow.cli.web_command import listening_socket


def test_connections_to_the_web_server_send_without_delay() -> None:
    # asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # whose protocol is TCP; one made with proto 0 made every keep-alive
    # page wait about 40 ms for the client's delayed ACK.
    server = listening_socket("127.0.0.1", 0)
    accepted: list[int] = []

    async def main() -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        running = await asyncio.start_server(on_connect, sock=server)
        port = server.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()
        running.close()
        await running.wait_closed()

    asyncio.run(main())

    assert server.proto == socket.IPPROTO_TCP
    assert accepted and accepted[0] != 0
