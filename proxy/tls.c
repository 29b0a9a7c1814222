/* TLS over OpenSSL memory BIOs, for both sides of a session. */
#include "pgtally/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgt_tls {
    SSL *ssl;      /* OpenSSL session */
    BIO *in;       /* ciphertext received, read by OpenSSL */
    BIO *out;      /* ciphertext produced by OpenSSL, to be sent */
    bool ready;    /* handshake finished */
    char err[256]; /* last failure */
};

static void openssl_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s", what, buf);
}

SSL_CTX *pgt_tls_server_ctx(const pgt_config_t *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_error(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->client_tls_cert_file) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "client_tls_cert_file %s", cfg->client_tls_cert_file);
        openssl_error(err, errlen, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->client_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char what[300];
        snprintf(what, sizeof(what), "client_tls_key_file %s", cfg->client_tls_key_file);
        openssl_error(err, errlen, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *pgt_tls_client_ctx(const pgt_config_t *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_error(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    bool verify = cfg->upstream_tls == PGT_UPSTREAM_TLS_VERIFY_CA ||
                  cfg->upstream_tls == PGT_UPSTREAM_TLS_VERIFY_FULL;
    if (verify) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->upstream_tls_ca_file, NULL) != 1) {
            char what[300];
            snprintf(what, sizeof(what), "upstream_tls_ca_file %s", cfg->upstream_tls_ca_file);
            openssl_error(err, errlen, what);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (cfg->upstream_tls_cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->upstream_tls_cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, cfg->upstream_tls_key_file, SSL_FILETYPE_PEM) != 1) {
            openssl_error(err, errlen, "upstream_tls_cert_file/upstream_tls_key_file");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

pgt_tls_t *pgt_tls_new(SSL_CTX *ctx, bool is_server, const char *verify_host)
{
    pgt_tls_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out) {
        BIO_free(t->in);
        BIO_free(t->out);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    /* An empty input BIO means "try again later", not end of file. */
    BIO_set_mem_eof_return(t->in, -1);
    SSL_set_bio(t->ssl, t->in, t->out);
    if (is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (verify_host) {
            SSL_set_tlsext_host_name(t->ssl, verify_host);
            SSL_set1_host(t->ssl, verify_host);
        }
    }
    return t;
}

void pgt_tls_free(pgt_tls_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

int pgt_tls_feed(pgt_tls_t *t, const void *data, size_t len)
{
    if (len > 0 && BIO_write(t->in, data, (int)len) != (int)len) {
        openssl_error(t->err, sizeof(t->err), "TLS buffer");
        return PGT_TLS_ERROR;
    }
    return 0;
}

int pgt_tls_handshake(pgt_tls_t *t)
{
    if (t->ready)
        return PGT_TLS_DONE;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->ready = true;
        return PGT_TLS_DONE;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return PGT_TLS_AGAIN;
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK)
        snprintf(t->err, sizeof(t->err), "certificate verify failed: %s",
                 X509_verify_cert_error_string(vr));
    else
        openssl_error(t->err, sizeof(t->err), "TLS handshake failed");
    return PGT_TLS_ERROR;
}

bool pgt_tls_ready(const pgt_tls_t *t)
{
    return t->ready;
}

int pgt_tls_read(pgt_tls_t *t, void *buf, size_t cap)
{
    int n = SSL_read(t->ssl, buf, (int)cap);
    if (n > 0)
        return n;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return PGT_TLS_AGAIN;
    if (e == SSL_ERROR_ZERO_RETURN)
        return PGT_TLS_CLOSED;
    openssl_error(t->err, sizeof(t->err), "TLS read failed");
    return PGT_TLS_ERROR;
}

int pgt_tls_write(pgt_tls_t *t, const void *data, size_t len)
{
    /* Memory BIOs grow as needed, so SSL_write takes everything at once. */
    if (len == 0)
        return 0;
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done > (1u << 30) ? (1u << 30) : len - done;
        int n = SSL_write(t->ssl, (const char *)data + done, (int)chunk);
        if (n <= 0) {
            openssl_error(t->err, sizeof(t->err), "TLS write failed");
            return PGT_TLS_ERROR;
        }
        done += (size_t)n;
    }
    return 0;
}

size_t pgt_tls_take_output(pgt_tls_t *t, void *buf, size_t cap)
{
    if (BIO_ctrl_pending(t->out) == 0)
        return 0;
    int n = BIO_read(t->out, buf, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

const char *pgt_tls_error(pgt_tls_t *t)
{
    return t->err[0] ? t->err : "unknown TLS error";
}

const char *pgt_tls_version(const pgt_tls_t *t)
{
    return SSL_get_version(t->ssl);
}
