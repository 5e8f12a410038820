/* json.h — a small JSON (RFC 8259) reader for the files the runtime imports: a Hugging Face
 * config.json and model.safetensors.index.json. The whole document becomes a tree of JVal; strings
 * have their escapes resolved to UTF-8; numbers are doubles. */
#ifndef MF_JSON_H
#define MF_JSON_H
#include <stddef.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } JType;

typedef struct JVal {
  JType type;
  int b;               /* J_BOOL */
  double num;          /* J_NUM */
  char *str;           /* J_STR */
  int n;               /* J_ARR / J_OBJ: number of items */
  char **keys;         /* J_OBJ: key of each item */
  struct JVal *items;  /* J_ARR / J_OBJ */
} JVal;

/* Parse text[0..n). Returns the root (free with json_free), or NULL with "NAME:LINE:COL: what" in err. */
JVal *json_parse(const char *text, size_t n, const char *name, char *err, size_t errlen);
/* Read and parse a file; NULL with "PATH: reason" in err. */
JVal *json_read_file(const char *path, char *err, size_t errlen);
void json_free(JVal *v);
/* The member `key` of an object (NULL if v is not an object or has no such key). */
const JVal *json_get(const JVal *v, const char *key);
#endif
