/* TLS over memory BIOs: OpenSSL never touches a socket, so the same
 * non-blocking libuv stream carries plain and encrypted bytes alike. The
 * session feeds received ciphertext in, takes plaintext out, and sends what
 * OpenSSL leaves in the outgoing BIO. */
#ifndef PGTALLY_TLS_H
#define PGTALLY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "pgtally/config.h"

typedef struct pgt_tls pgt_tls_t;

/* Result codes of pgt_tls_handshake and pgt_tls_read. */
#define PGT_TLS_DONE 1  /* handshake finished */
#define PGT_TLS_AGAIN 0 /* needs more input */
#define PGT_TLS_ERROR (-1)
#define PGT_TLS_CLOSED (-2) /* peer sent close_notify */

/* Builds the context used towards clients from the configured certificate
 * and key. Returns NULL with a message in err. */
SSL_CTX *pgt_tls_server_ctx(const pgt_config_t *cfg, char *err, size_t errlen);

/* Builds the context used towards the server, verifying it as upstream_tls
 * asks. Returns NULL with a message in err. */
SSL_CTX *pgt_tls_client_ctx(const pgt_config_t *cfg, char *err, size_t errlen);

/* Starts a TLS session on ctx. For the client side of a connection,
 * verify_host names the host to check (verify-full) and is used for SNI;
 * pass NULL otherwise. Returns NULL when out of memory. */
pgt_tls_t *pgt_tls_new(SSL_CTX *ctx, bool is_server, const char *verify_host);

/* Frees a TLS session. NULL is allowed. */
void pgt_tls_free(pgt_tls_t *t);

/* Hands received ciphertext to OpenSSL. Returns 0 or PGT_TLS_ERROR. */
int pgt_tls_feed(pgt_tls_t *t, const void *data, size_t len);

/* Advances the handshake. Returns PGT_TLS_DONE, PGT_TLS_AGAIN or
 * PGT_TLS_ERROR (see pgt_tls_error). Output may be pending afterwards. */
int pgt_tls_handshake(pgt_tls_t *t);

/* True once the handshake has finished. */
bool pgt_tls_ready(const pgt_tls_t *t);

/* Decrypts into buf. Returns the number of bytes, PGT_TLS_AGAIN when no
 * whole record is buffered, PGT_TLS_CLOSED or PGT_TLS_ERROR. */
int pgt_tls_read(pgt_tls_t *t, void *buf, size_t cap);

/* Encrypts len bytes. Returns 0 or PGT_TLS_ERROR. */
int pgt_tls_write(pgt_tls_t *t, const void *data, size_t len);

/* Moves up to cap bytes of ciphertext waiting to be sent into buf; returns
 * how many (0 when none). */
size_t pgt_tls_take_output(pgt_tls_t *t, void *buf, size_t cap);

/* Describes the last failure (verification result or OpenSSL error). */
const char *pgt_tls_error(pgt_tls_t *t);

/* Protocol and cipher negotiated, for logs. */
const char *pgt_tls_version(const pgt_tls_t *t);

#endif
