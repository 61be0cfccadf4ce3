#!/usr/bin/python3
"""A TCP forwarder for tests: listens on 127.0.0.1 and relays every connection to a target.

    tcp_forward.py TARGET_HOST:PORT [TARGET_HOST:PORT ...]

For each target it listens on a free port of 127.0.0.1 and prints one line
`LISTEN_PORT TARGET` per target, then `ready`. The test that starts it controls it by PID:
SIGSTOP makes every path silent (connections, new and established, get no answer: a host that
vanished), SIGCONT resumes, SIGTERM/SIGKILL ends it. Standard library only; threads, no state
beyond the sockets.
"""
import socket
import sys
import threading


def pump(source, target):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, host, port):
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((host, port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: tcp_forward.py TARGET_HOST:PORT [...]")
    threads = []
    for target in sys.argv[1:]:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            sys.exit(f"tcp_forward.py: '{target}' is not HOST:PORT")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        print(listener.getsockname()[1], target, flush=True)
        thread = threading.Thread(target=serve, args=(listener, host, int(port)), daemon=True)
        thread.start()
        threads.append(thread)
    print("ready", flush=True)
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
