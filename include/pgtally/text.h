/* Small text helpers shared by the report and pgtallyctl. */
#ifndef PGTALLY_TEXT_H
#define PGTALLY_TEXT_H

#include <stddef.h>

/* Returns the length of the valid UTF-8 sequence at p (1 to 4), or 0.
 * p must have 4 readable bytes or a NUL before the sequence ends. */
size_t pgt_utf8_len(const unsigned char *p);

/* A duration for people: "0.250 ms", "12.3 ms", "1.52 s", "3m05s",
 * "2h10m". Returns buf. */
char *pgt_fmt_seconds(double s, char *buf, size_t len);

#endif
