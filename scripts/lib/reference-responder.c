// A reference for `scripts/bench rest`: the cheapest keep-alive HTTP/1.1 responder one thread can
// be (epoll, one read and one write per request, a fixed response the size of Baton's /primary
// answer). Its p99 under the same wrk load and beside the same cluster is the floor this machine
// sets for any server's tail; the bench reports it beside Baton's.
//
// Usage: reference-responder PORT   (listens on 127.0.0.1:PORT until killed)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: reference-responder PORT (1-65535)\n");
        return 2;
    }
    char response[1024];
    char body[372];
    memset(body, 'x', sizeof body - 1);
    body[sizeof body - 1] = 0;
    int length = snprintf(response, sizeof response,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                          "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\nServer: reference\r\n\r\n%s",
                          strlen(body), body);
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 128) != 0) {
        perror("reference-responder: bind/listen");
        return 1;
    }
    int poller = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    struct epoll_event ready[64];
    char buffer[8192];
    for (;;) {
        int count = epoll_wait(poller, ready, 64, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listener) {
                int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
                if (client < 0) continue;
                setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
                epoll_ctl(poller, EPOLL_CTL_ADD, client, &added);
                continue;
            }
            ssize_t received = read(fd, buffer, sizeof buffer);
            if (received <= 0) {
                close(fd);
                continue;
            }
            // One response per request head (CRLF CRLF) in what arrived; wrk sends whole heads.
            for (ssize_t j = 3; j < received; j++) {
                if (buffer[j - 3] == '\r' && buffer[j - 2] == '\n' && buffer[j - 1] == '\r' && buffer[j] == '\n') {
                    if (write(fd, response, length) != length) break;
                }
            }
        }
    }
}
