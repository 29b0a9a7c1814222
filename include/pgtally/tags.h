/* Statement tags: what a statement's comments say about who sent it, read
 * from a sqlcommenter comment (key='value',...) and from a JSON object
 * comment such as dbt's query comment, into one flat JSON object for the
 * ledger. Pure; runs on the meter's worker thread. */
#ifndef PGTALLY_TAGS_H
#define PGTALLY_TAGS_H

#include <stddef.h>

/* Reads the tags of one statement, text[0..len) (need not be
 * NUL-terminated), into a compact JSON object string {"key":"value",...}
 * with sorted keys and string values. Comments are found with libpg_query's
 * scanner; only C-style comments count.
 *
 * - sqlcommenter: the last comment that holds an '=' and is not a JSON
 *   object, such as key='value',key2='val%20ue'; keys and values are
 *   URL-decoded and \' is read as '.
 * - JSON (dbt's query-comment, prepended by default or appended with
 *   append: true): a comment whose body, blanks aside, is {...}; the first
 *   comment of the statement when it is one, else the last one. Strings
 *   are kept as they are, numbers and booleans become their JSON text
 *   ("42", "1.5", "true"), nested objects are flattened with dotted names
 *   ({"dbt": {"node": "x"}} gives "dbt.node") down to four levels, and
 *   nulls, arrays, empty names and names over 200 bytes are skipped. A
 *   query_tag key (dbt's query_tag config) is a tag like any other.
 *
 * When both give the same key, sqlcommenter wins. A comment body over
 * 8 KB, or one that gives more than 64 tags, is ignored, and so is a
 * malformed one (either kind): the other kind still counts. Returns a
 * malloc'd string the caller frees, or NULL when there are no tags or
 * memory runs out. */
char *pgt_tags_json(const char *text, size_t len);

#endif
