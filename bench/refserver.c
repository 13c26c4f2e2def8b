/* The compiled reference for bench_scrape_cost.py: a minimal static exposition server.
 *
 * Usage: refserver PORT FILE. Reads FILE once, then on 127.0.0.1:PORT answers every request (any
 * path) with 200 and FILE's bytes as text/plain; version=0.0.4, one request per connection
 * (Connection: close), one connection at a time. SIGTERM ends it. What the fastest exporter of
 * already rendered bytes does: read the request, write the headers and the body.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT FILE\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    FILE *f = fopen(argv[2], "rb");
    if (!f) { perror("open"); return 1; }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) { perror("stat"); return 1; }
    size_t len = (size_t)st.st_size;
    char *body = malloc(len + 1);
    if (!body || fread(body, 1, len, f) != len) { perror("read"); return 1; }
    fclose(f);
    char head[256];
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n", len);

    int srv = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(srv, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(srv, 128) != 0) {
        perror("listen");
        return 1;
    }
    char req[8192];
    for (;;) {
        int c = accept(srv, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t got = 0;
        while (got < sizeof req - 1) { /* read the request head: up to the blank line */
            ssize_t n = read(c, req + got, sizeof req - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            req[got] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        if (got > 0) {
            if (write_all(c, head, (size_t)hlen) == 0) write_all(c, body, len);
        }
        close(c);
    }
}
