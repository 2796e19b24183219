/* cmd_serve.c - `magiclens serve`: the HTTP server and web page over one
 * index (src/serve/, docs/serve.md).
 *
 *   magiclens serve --index X.mlindex --model M [--host 127.0.0.1] [--port 8080]
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "serve/serve.h"

typedef struct serve_cli {
    ml_serve_opts s;
    const char *model, *vocab;
    int precision, threads;
    char web_buf[PATH_MAX];
} serve_cli;

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The web page ships in the source tree's web/ folder: look next to the
 * binary (build/../web), then in the current folder. */
static const char *default_web(serve_cli *c) {
    char exe[PATH_MAX - 16]; /* room for "/../web" in web_buf */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(c->web_buf, sizeof c->web_buf, "%s/../web", exe);
        if (is_dir(c->web_buf)) return c->web_buf;
    }
    return is_dir("web") ? "web" : NULL;
}

enum { O_HOST = 256, O_PORT, O_WEB, O_TOKEN, O_WORKERS, O_QUEUE, O_CONNS, O_TIMEOUT, O_UPLOAD,
       O_PIXELS, O_TEXT, O_MAXK, O_PREC, O_THREADS };

static int parse_value(serve_cli *c, int opt, const char *v) {
    double x;
    ml_serve_opts *s = &c->s;
    switch (opt) {
    case O_PORT: if (cli_number("serve", "--port", v, 0, 65535, &x)) return -1; s->port = (int)x; return 0;
    case O_WORKERS: if (cli_number("serve", "--workers", v, 1, 256, &x)) return -1; s->workers = (int)x; return 0;
    case O_QUEUE: if (cli_number("serve", "--queue", v, 0, 100000, &x)) return -1; s->queue = (int)x; return 0;
    case O_CONNS: if (cli_number("serve", "--max-conns", v, 1, 100000, &x)) return -1; s->max_conns = (int)x; return 0;
    case O_TIMEOUT: if (cli_number("serve", "--timeout", v, 1, 3600, &x)) return -1; s->timeout_s = (int)x; return 0;
    case O_UPLOAD: if (cli_number("serve", "--max-upload-mb", v, 0.001, 1024, &x)) return -1;
        s->max_upload = (size_t)(x * 1048576); return 0;
    case O_PIXELS: if (cli_number("serve", "--max-pixels", v, 1, 1e9, &x)) return -1; s->max_pixels = (long long)x; return 0;
    case O_TEXT: if (cli_number("serve", "--max-text", v, 1, 1 << 20, &x)) return -1; s->max_text = (size_t)x; return 0;
    case O_MAXK: if (cli_number("serve", "--max-k", v, 1, 100000, &x)) return -1; s->max_k = (int)x; return 0;
    case O_THREADS: if (cli_number("serve", "--threads", v, 1, 4096, &x)) return -1; c->threads = (int)x; return 0;
    case O_PREC:
        if (!strcmp(v, "auto")) return c->precision = ML_PRECISION_AUTO, 0;
        return (c->precision = cli_parse_precision(v)) < 0 ? -1 : 0;
    }
    return -1;
}

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: magiclens serve --index X.mlindex --model M [options]   (docs/serve.md)\n"
            "  --host H (127.0.0.1)      bind address; loopback only unless you say otherwise\n"
            "  --port N (8080)           0 = any free port (printed at start-up)\n"
            "  --web DIR                 the page's files (default <binary>/../web, else ./web)\n"
            "  --token T                 admin token, 8+ characters (default $MAGICLENS_TOKEN)\n"
            "  --workers N (2)           requests doing expensive work at once\n"
            "  --queue N (64)            requests waiting for a worker; beyond: 503\n"
            "  --max-conns N (256)       open connections\n"
            "  --timeout S (30)          idle connection timeout and longest wait for a worker\n"
            "  --max-upload-mb X (16)    image upload size (413 beyond)\n"
            "  --max-pixels N (40000000) decoded image size, checked before decoding\n"
            "  --max-text N (2000)       instruction length in bytes\n"
            "  --max-k N (1000)          k + offset\n"
            "  --precision P (auto), --threads N, --vocab V, --quiet (no per-request log line)\n");
}

static int parse(int argc, char **argv, serve_cli *c) {
    static const struct option lo[] = {
        {"index", required_argument, 0, 'x'}, {"model", required_argument, 0, 'm'},
        {"vocab", required_argument, 0, 'v'}, {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT}, {"web", required_argument, 0, O_WEB},
        {"token", required_argument, 0, O_TOKEN}, {"workers", required_argument, 0, O_WORKERS},
        {"queue", required_argument, 0, O_QUEUE}, {"max-conns", required_argument, 0, O_CONNS},
        {"timeout", required_argument, 0, O_TIMEOUT}, {"max-upload-mb", required_argument, 0, O_UPLOAD},
        {"max-pixels", required_argument, 0, O_PIXELS}, {"max-text", required_argument, 0, O_TEXT},
        {"max-k", required_argument, 0, O_MAXK}, {"precision", required_argument, 0, O_PREC},
        {"threads", required_argument, 0, O_THREADS}, {"quiet", no_argument, 0, 'q'},
        {0, 0, 0, 0}};
    ml_serve_opts *s = &c->s;
    *s = (ml_serve_opts){NULL, NULL, "127.0.0.1", 8080, NULL, getenv("MAGICLENS_TOKEN"), 2, 64,
                         256, 30, 16u << 20, 40000000LL, 2000, 1000, 0};
    c->precision = ML_PRECISION_AUTO, c->threads = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "x:m:v:q", lo, NULL)) != -1) {
        switch (opt) {
        case 'x': s->index = optarg; break;
        case 'm': c->model = optarg; break;
        case 'v': c->vocab = optarg; break;
        case 'q': s->quiet = 1; break;
        case O_HOST: s->host = optarg; break;
        case O_WEB: s->web_dir = optarg; break;
        case O_TOKEN: s->token = optarg; break;
        default:
            if (opt < O_HOST || parse_value(c, opt, optarg) != 0) return -1;
        }
    }
    if (!s->index || !c->model) {
        fprintf(stderr, "magiclens serve: --index and --model are required\n");
        return -1;
    }
    if (s->token && strlen(s->token) < 8) {
        fprintf(stderr, "magiclens serve: the admin token must be at least 8 characters\n");
        return -1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv) {
    serve_cli c;
    memset(&c, 0, sizeof c);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return serve_usage(stdout), 0;
    if (parse(argc, argv, &c) != 0) return 2;
    if (!c.s.web_dir) c.s.web_dir = default_web(&c);
    c.s.model_name = c.model;
    if (c.threads) ml_set_threads(c.threads);
    /* Block the server's signals before loading the model: loading starts the
     * kernel thread pool, and a thread created with them unblocked could take
     * a SIGHUP and end the process instead of reloading. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP), sigaddset(&set, SIGINT), sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    ml_model *m = cli_load_model(c.model, c.vocab, c.precision);
    if (!m) return 1;
    return ml_serve_run(m, &c.s);
}
