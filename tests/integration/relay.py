"""A loopback TCP relay placed between pgtally and PostgreSQL.

It lets a test take "the upstream" away for new connections while existing
sessions keep working (stop_listening), or cut one upstream connection
abruptly in the middle of a query (abort), without disturbing the shared
PostgreSQL server that the rest of the suite uses.
"""

import select
import socket
import struct
import threading


class TcpRelay:
    def __init__(self, target_host, target_port, refuse_tls=False):
        """refuse_tls: answer SSLRequest with 'N' itself, like a server
        built without TLS support."""
        self.target = (target_host, target_port)
        self.refuse_tls = refuse_tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []  # (client-side socket, server-side socket)
        self.closed = False
        self.accepted = threading.Condition(self.lock)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
                self.accepted.notify_all()
            threading.Thread(target=self._serve, args=(client, server),
                             daemon=True).start()

    def _serve(self, client, server):
        if self.refuse_tls:
            try:
                client.settimeout(5)
                head = b""
                while len(head) < 8:
                    chunk = client.recv(8 - len(head))
                    if not chunk:
                        raise OSError("eof")
                    head += chunk
                client.settimeout(None)
                if head == struct.pack("!II", 8, 80877103):
                    client.sendall(b"N")
                else:
                    server.sendall(head)
            except OSError:
                client.close()
                server.close()
                return
        self._pump(client, server)

    @staticmethod
    def _pump(a, b):
        peers = {a: b, b: a}
        try:
            while True:
                r, _, _ = select.select([a, b], [], [])
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("eof")
                    peers[s].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def count(self):
        with self.lock:
            return len(self.pairs)

    def wait_for_count(self, n, timeout=5.0):
        with self.lock:
            if not self.accepted.wait_for(lambda: len(self.pairs) >= n, timeout):
                raise TimeoutError("relay saw %d connections, wanted %d"
                                   % (len(self.pairs), n))

    def stop_listening(self):
        """New connections to the relay are refused; existing ones go on."""
        try:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the socket listening until accept() returned
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass

    def abort(self, index):
        """Cut connection number `index` with a TCP reset on both sides."""
        with self.lock:
            pair = self.pairs[index]
        for s in pair:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
                # Wakes the pump thread, which then closes both sockets;
                # with a zero linger time the close sends an RST.
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def close(self):
        self.stop_listening()
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
