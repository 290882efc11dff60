/* Parameter schemas and values (core/params.c): building with defaults,
 * every error message exactly, the accessors, the closest-word suggester
 * and the schema checks. Entries are made by hand, so no registry or
 * manifest is involved. */
#include <stdio.h>
#include <string.h>

#include "../core/registry.h"
#include "harness.h"

static const char *const kd_schema =
    "{\"temperature\": {\"type\": \"number\", \"default\": 4.0, \"min\": 0,"
    "                   \"exclusive_min\": true, \"doc\": \"softening temperature\"},"
    " \"alpha\": {\"type\": \"number\", \"default\": 0.9, \"min\": 0, \"max\": 1,"
    "             \"doc\": \"weight of the KD term\"},"
    " \"logit_stand\": {\"type\": \"boolean\", \"default\": false, \"doc\": \"z-score\"},"
    " \"reduction\": {\"type\": \"string\", \"default\": \"batchmean\","
    "                 \"choices\": [\"batchmean\", \"mean\", \"sum\"], \"doc\": \"reduce\"},"
    " \"epochs\": {\"type\": \"integer\", \"default\": 10, \"min\": 1, \"doc\": \"epochs\"},"
    " \"groups\": {\"type\": \"integer\", \"default\": 1, \"choices\": [1, 2, 4],"
    "              \"doc\": \"groups\"},"
    " \"milestones\": {\"type\": \"array\", \"items\": \"integer\", \"default\": [3, 6],"
    "                  \"doc\": \"epochs where the rate drops\"},"
    " \"rates\": {\"type\": \"array\", \"items\": \"number\", \"default\": [0.5, 1],"
    "             \"doc\": \"factors\"},"
    " \"names\": {\"type\": \"array\", \"items\": \"string\", \"default\": [\"a\", \"b\"],"
    "             \"doc\": \"names\"}}";

static const char *const label = "plugins/kd/manifest.json: provides[0]";

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (!v)
        fprintf(stderr, "test JSON does not parse: %s: %s\n", err.text, text);
    return v;
}

static kd_registry_entry make_entry(const json_t *schema)
{
    kd_registry_entry e = {0};
    e.kind = KD_KIND_LOSS;
    e.name = "kd";
    e.params = schema;
    return e;
}

/* Builds `value` against `schema`; returns the status and sets *out. */
static kd_status build(const char *schema_text, const char *value_text, const char *path,
                       int n_ignore, const char *const *ignore, kd_params **out)
{
    json_t *schema = schema_text ? parse(schema_text) : NULL;
    json_t *value = value_text ? parse(value_text) : NULL;
    kd_registry_entry e = make_entry(schema);
    kd_status st = kd_params_build(&e, value, path, n_ignore, ignore, out);
    json_decref(value);
    json_decref(schema);
    return st;
}

/* The build must fail with KD_ERR_INVALID, no output and exactly `want`. */
static void expect_error(const char *name, const char *schema_text, const char *value_text,
                         const char *path, int n_ignore, const char *const *ignore,
                         const char *want)
{
    kd_params *p = (kd_params *)1; /* a failed build must clear it */
    kd_status st = build(schema_text, value_text, path, n_ignore, ignore, &p);
    bool ok = st == KD_ERR_INVALID && !p && !strcmp(kd_last_error(), want);
    kt_check(ok, name, "status %s, out %s, message \"%s\", want \"%s\"", kd_status_name(st),
             p ? "set" : "NULL", kd_last_error(), want);
    if (st == KD_OK)
        kd_params_free(p);
}

static void expect_schema_error(const char *name, const char *schema_text, const char *want)
{
    json_t *schema = parse(schema_text);
    kd_status st = kd_params_check_schema(schema, label);
    kt_check(st == KD_ERR_FORMAT && !strcmp(kd_last_error(), want), name,
             "status %s, message \"%s\", want \"%s\"", kd_status_name(st), kd_last_error(),
             want);
    json_decref(schema);
}

/* ---------------------------------------------------------------- building */

static void test_defaults(void)
{
    kd_params *p = NULL;
    kd_status st = build(kd_schema, NULL, "losses[1]", 0, NULL, &p);
    if (!kt_check(st == KD_OK && p, "build: NULL value takes every default", "%s",
                  kd_last_error()))
        return;
    kt_check(kd_params_number(p, "temperature") == 4.0 && kd_params_number(p, "alpha") == 0.9 &&
                 !kd_params_boolean(p, "logit_stand") &&
                 !strcmp(kd_params_string(p, "reduction"), "batchmean") &&
                 kd_params_integer(p, "epochs") == 10 && kd_params_integer(p, "groups") == 1,
             "build: scalar defaults", "a default differs");
    kt_check(kd_params_array_length(p, "milestones") == 2 &&
                 kd_params_array_number(p, "milestones", 1) == 6.0 &&
                 kd_params_array_length(p, "rates") == 2 &&
                 kd_params_array_number(p, "rates", 1) == 1.0 &&
                 !strcmp(kd_params_array_string(p, "names", 1), "b"),
             "build: array defaults", "an array default differs");
    kd_params_free(p);

    st = build(kd_schema, "{}", "losses[1]", 0, NULL, &p);
    kt_check(st == KD_OK && kd_params_number(p, "temperature") == 4.0,
             "build: {} takes every default", "%s", kd_last_error());
    kd_params_free(p);

    st = build(NULL, "{}", "losses[1]", 0, NULL, &p);
    kt_check(st == KD_OK && p && kd_params_number(p, "temperature") == 0.0,
             "build: no schema, no values", "%s", kd_last_error());
    kd_params_free(p);
}

static void test_given_values(void)
{
    kd_params *p = NULL;
    kd_status st = build(kd_schema,
                         "{\"temperature\": 2, \"alpha\": 1, \"logit_stand\": true,"
                         " \"reduction\": \"sum\", \"epochs\": 5.0, \"groups\": 4.0,"
                         " \"milestones\": [1, 2.0, 30], \"rates\": [1, 0.25],"
                         " \"names\": []}",
                         "losses[1]", 0, NULL, &p);
    if (!kt_check(st == KD_OK && p, "build: given values", "%s", kd_last_error()))
        return;
    kt_check(kd_params_number(p, "temperature") == 2.0 && kd_params_number(p, "alpha") == 1.0 &&
                 kd_params_boolean(p, "logit_stand") &&
                 !strcmp(kd_params_string(p, "reduction"), "sum"),
             "build: given values override defaults", "a value differs");
    /* an integral real is an integer; an integer is a number */
    kt_check(kd_params_integer(p, "epochs") == 5 && kd_params_integer(p, "groups") == 4 &&
                 kd_params_integer(p, "temperature") == 0,
             "build: 5.0 for an integer reads as 5; 2 for a number stays a number",
             "epochs %lld, groups %lld, temperature as integer %lld",
             (long long)kd_params_integer(p, "epochs"), (long long)kd_params_integer(p, "groups"),
             (long long)kd_params_integer(p, "temperature"));
    kt_check(kd_params_array_length(p, "milestones") == 3 &&
                 kd_params_array_number(p, "milestones", 1) == 2.0 &&
                 kd_params_array_number(p, "milestones", 2) == 30.0 &&
                 kd_params_array_number(p, "rates", 0) == 1.0 &&
                 kd_params_array_number(p, "rates", 1) == 0.25 &&
                 kd_params_array_length(p, "names") == 0,
             "build: arrays normalised", "an element differs");
    kd_params_free(p);

    /* an integer beyond 2^53 stays exact */
    st = build(kd_schema, "{\"epochs\": 9007199254740993}", "x", 0, NULL, &p);
    kt_check(st == KD_OK && kd_params_integer(p, "epochs") == 9007199254740993LL,
             "build: integer beyond 2^53 exact", "%s", kd_last_error());
    kd_params_free(p);
    st = build(kd_schema, "{\"epochs\": 9007199254740992.0}", "x", 0, NULL, &p);
    kt_check(st == KD_OK && kd_params_integer(p, "epochs") == 9007199254740992LL,
             "build: 2^53 as a real is an integer", "%s", kd_last_error());
    kd_params_free(p);
    st = build(kd_schema, "{\"alpha\": 1.0, \"temperature\": 1e-300}", "x", 0, NULL, &p);
    kt_check(st == KD_OK && kd_params_number(p, "temperature") == 1e-300,
             "build: bounds inclusive and exclusive", "%s", kd_last_error());
    kd_params_free(p);
}

static void test_ignore(void)
{
    const char *const ignore[] = {"name", "weight"};
    kd_params *p = NULL;
    kd_status st = build(kd_schema, "{\"name\": \"kd\", \"weight\": 0.5, \"temperature\": 2}",
                         "losses[1]", 2, ignore, &p);
    kt_check(st == KD_OK && kd_params_number(p, "temperature") == 2.0 &&
                 kd_params_number(p, "weight") == 0.0 && kd_params_string(p, "name") == NULL,
             "ignore: job keys skipped and not kept", "%s", kd_last_error());
    kd_params_free(p);
    expect_error("ignore: a misspelt job key is suggested", kd_schema, "{\"wieght\": 0.5}",
                 "losses[1]", 2, ignore,
                 "losses[1].wieght: unknown parameter of loss 'kd'; did you mean weight?");
    expect_error("ignore: an empty list skips nothing", kd_schema, "{\"weight\": 0.5}", "losses[1]",
                 0, NULL,
                 "losses[1].weight: unknown parameter of loss 'kd'; it takes: temperature, alpha, "
                 "logit_stand, reduction, epochs, groups, milestones, rates, names");
}

static void test_file_params(void)
{
    const char *schema = "{\"images\": {\"type\": \"string\", \"file\": true, \"doc\": \"d\"},"
                         " \"out\": {\"type\": \"string\", \"default\": \"/no/such\", "
                         "\"file\": true, \"doc\": \"d\"}}";
    kd_params *p = NULL;
    kd_status st = build(schema, "{\"images\": \"/etc/hostname\"}", "data", 0, NULL, &p);
    kt_check(st == KD_OK, "file: a readable file passes; a default is not checked", "%s",
             kd_last_error());
    kd_params_free(p);
    expect_error("file: a missing file is refused", schema, "{\"images\": \"/no/such/file\"}",
                 "data.train.dataset", 0, NULL,
                 "data.train.dataset.images: cannot read file '/no/such/file': No such file or "
                 "directory");
    expect_schema_error("schema: file on a number",
                        "{\"n\": {\"type\": \"number\", \"file\": true, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.n: \"file\" must be true or "
                        "false, on a string");
}

static void test_errors(void)
{
    expect_error("error: unknown key with suggestion", kd_schema, "{\"temprature\": 2}",
                 "losses[1]", 0, NULL,
                 "losses[1].temprature: unknown parameter of loss 'kd'; did you mean temperature?");
    expect_error("error: unknown key, nothing close", kd_schema, "{\"lr\": 2}", "losses[1]", 0,
                 NULL,
                 "losses[1].lr: unknown parameter of loss 'kd'; it takes: temperature, alpha, "
                 "logit_stand, reduction, epochs, groups, milestones, rates, names");
    expect_error("error: unknown key, empty schema", "{}", "{\"lr\": 2}", "losses[1]", 0, NULL,
                 "losses[1].lr: unknown parameter of loss 'kd'; it takes none");
    expect_error("error: unknown key, no path", kd_schema, "{\"alhpa\": 2}", "", 0, NULL,
                 "alhpa: unknown parameter of loss 'kd'; did you mean alpha?");

    expect_error("error: string for a number", kd_schema, "{\"temperature\": \"4\"}",
                 "losses[1]", 0, NULL,
                 "losses[1].temperature: expected a number, got a string (\"4\")");
    expect_error("error: integer for a boolean", kd_schema, "{\"logit_stand\": 1}", "losses[1]",
                 0, NULL, "losses[1].logit_stand: expected a boolean, got an integer (1)");
    expect_error("error: null for a string", kd_schema, "{\"reduction\": null}", "losses[1]", 0,
                 NULL, "losses[1].reduction: expected a string, got null");
    expect_error("error: object for an integer", kd_schema, "{\"epochs\": {}}", "losses[1]", 0,
                 NULL, "losses[1].epochs: expected an integer, got an object");
    expect_error("error: boolean for a number", kd_schema, "{\"alpha\": true}", "losses[1]", 0,
                 NULL, "losses[1].alpha: expected a number, got a boolean (true)");
    expect_error("error: long string shown cut", kd_schema,
                 "{\"alpha\": \"0123456789012345678901234567890123456789xyz\"}", "l", 0, NULL,
                 "l.alpha: expected a number, got a string "
                 "(\"0123456789012345678901234567890123456789...\")");

    expect_error("error: 4.5 for an integer", kd_schema, "{\"epochs\": 4.5}", "losses[1]", 0,
                 NULL, "losses[1].epochs: expected an integer, got 4.5");
    expect_error("error: real beyond 2^53 for an integer", kd_schema, "{\"epochs\": 1e17}",
                 "losses[1]", 0, NULL,
                 "losses[1].epochs: expected an integer, got 1e+17 (a real beyond 2^53 is not "
                 "exact; write it without a fraction or exponent)");

    expect_error("error: below an exclusive min", kd_schema, "{\"temperature\": 0}", "losses[1]",
                 0, NULL, "losses[1].temperature: 0 is below min 0 (exclusive)");
    expect_error("error: below an inclusive min", kd_schema, "{\"epochs\": 0}", "losses[1]", 0,
                 NULL, "losses[1].epochs: 0 is below min 1");
    expect_error("error: above max", kd_schema, "{\"alpha\": 1.5}", "losses[1]", 0, NULL,
                 "losses[1].alpha: 1.5 is above max 1");
    expect_error("error: 0.1 shown as written", kd_schema, "{\"alpha\": -0.1}", "losses[1]", 0,
                 NULL, "losses[1].alpha: -0.1 is below min 0");
    /* 2^53 + 1 rounds to the bound as a double; the comparison must not */
    expect_error("error: integer just above a real bound beyond 2^53",
                 "{\"n\": {\"type\": \"integer\", \"max\": 9007199254740992.0, \"default\": 0,"
                 " \"doc\": \"n\"}}",
                 "{\"n\": 9007199254740993}", "x", 0, NULL,
                 "x.n: 9007199254740993 is above max 9007199254740992");
    expect_error("error: exclusive max",
                 "{\"p\": {\"type\": \"number\", \"max\": 1, \"exclusive_max\": true,"
                 " \"default\": 0, \"doc\": \"p\"}}",
                 "{\"p\": 1}", "x", 0, NULL, "x.p: 1 is above max 1 (exclusive)");

    expect_error("error: not a choice, suggestion", kd_schema, "{\"reduction\": \"batchmaen\"}",
                 "losses[1]", 0, NULL,
                 "losses[1].reduction: \"batchmaen\" is not one of \"batchmean\", \"mean\", "
                 "\"sum\"; did you mean batchmean?");
    expect_error("error: not a choice", kd_schema, "{\"reduction\": \"none\"}", "losses[1]", 0,
                 NULL,
                 "losses[1].reduction: \"none\" is not one of \"batchmean\", \"mean\", \"sum\"");
    expect_error("error: not a numeric choice", kd_schema, "{\"groups\": 3}", "losses[1]", 0,
                 NULL, "losses[1].groups: 3 is not one of 1, 2, 4");

    expect_error("error: array element type", kd_schema, "{\"milestones\": [1, 2, \"x\"]}",
                 "losses[1]", 0, NULL,
                 "losses[1].milestones[2]: expected an integer, got a string (\"x\")");
    expect_error("error: array element 2.5 for integer", kd_schema,
                 "{\"milestones\": [1, 2, 2.5]}", "losses[1]", 0, NULL,
                 "losses[1].milestones[2]: expected an integer, got 2.5");
    expect_error("error: string array element", kd_schema, "{\"names\": [\"a\", false]}",
                 "losses[1]", 0, NULL,
                 "losses[1].names[1]: expected a string, got a boolean (false)");
    expect_error("error: wrong scalar for an array", kd_schema, "{\"milestones\": \"3\"}",
                 "losses[1]", 0, NULL,
                 "losses[1].milestones: expected an array (or one integer), got a string (\"3\")");
    expect_error("error: object for an array", kd_schema, "{\"milestones\": {}}", "losses[1]", 0,
                 NULL, "losses[1].milestones: expected an array (or one integer), got an object");
    kd_params *one = NULL;
    kd_status one_st = build(kd_schema, "{\"milestones\": 3}", "losses[1]", 0, NULL, &one);
    kt_check(one_st == KD_OK && kd_params_array_length(one, "milestones") == 1 &&
                 kd_params_array_number(one, "milestones", 0) == 3,
             "a lone scalar is a one-element array", "status %s: %s", kd_status_name(one_st),
             kd_last_error());
    kd_params_free(one);

    const char *required =
        "{\"scale\": {\"type\": \"number\", \"doc\": \"required\"},"
        " \"shift\": {\"type\": \"number\", \"default\": 0, \"doc\": \"optional\"}}";
    expect_error("error: missing required", required, "{\"shift\": 1}", "losses[1]", 0, NULL,
                 "losses[1]: missing required parameter 'scale' of loss 'kd'");
    expect_error("error: missing required, no path", required, NULL, NULL, 0, NULL,
                 "missing required parameter 'scale' of loss 'kd'");
    kd_params *p = NULL;
    kd_status st = build(required, "{\"scale\": 3}", "losses[1]", 0, NULL, &p);
    kt_check(st == KD_OK && kd_params_number(p, "scale") == 3.0 &&
                 kd_params_number(p, "shift") == 0.0,
             "build: required given", "%s", kd_last_error());
    kd_params_free(p);

    expect_error("error: value not an object", kd_schema, "[1]", "losses[1]", 0, NULL,
                 "losses[1]: expected an object (the loss 'kd'), got an array");

    st = kd_params_build(NULL, NULL, "x", 0, NULL, &p);
    kt_check(st == KD_ERR_INVALID && !p, "error: NULL entry", "%s", kd_status_name(st));
    st = build("[]", "{}", "x", 0, NULL, &p);
    kt_check(st == KD_ERR_FORMAT && !p && !strcmp(kd_last_error(),
                                                   "loss 'kd': its schema is not an object"),
             "error: schema not an object", "%s: %s", kd_status_name(st), kd_last_error());
}

static void test_accessors(void)
{
    kd_params *p = NULL;
    kd_status st = build(kd_schema, NULL, "x", 0, NULL, &p);
    if (!kt_check(st == KD_OK, "accessors: build", "%s", kd_last_error()))
        return;
    kt_check(kd_params_number(p, "epochs") == 10.0 && kd_params_number(p, "groups") == 1.0,
             "accessors: number of an integer param", "%g",
             kd_params_number(p, "epochs"));
    kt_check(kd_params_number(p, "nope") == 0.0 && kd_params_integer(p, "nope") == 0 &&
                 !kd_params_boolean(p, "nope") && !kd_params_string(p, "nope") &&
                 kd_params_array_length(p, "nope") == 0 &&
                 kd_params_array_number(p, "nope", 0) == 0.0 &&
                 !kd_params_array_string(p, "nope", 0),
             "accessors: undeclared key gives 0/false/NULL", "a value came back");
    kt_check(kd_params_integer(p, "temperature") == 0 && !kd_params_string(p, "epochs") &&
                 kd_params_number(p, "reduction") == 0.0 &&
                 !kd_params_boolean(p, "reduction") &&
                 kd_params_array_length(p, "epochs") == 0 &&
                 !kd_params_array_string(p, "milestones", 0) &&
                 kd_params_array_number(p, "names", 0) == 0.0 &&
                 kd_params_number(p, "milestones") == 0.0,
             "accessors: wrong type gives 0/false/NULL", "a value came back");
    kt_check(kd_params_array_number(p, "milestones", 2) == 0.0 &&
                 kd_params_array_number(p, "milestones", -1) == 0.0 &&
                 !kd_params_array_string(p, "names", 2) &&
                 !kd_params_array_string(p, "names", -1),
             "accessors: index out of range gives 0/NULL", "a value came back");
    kt_check(kd_params_number(NULL, "alpha") == 0.0 && kd_params_integer(NULL, "epochs") == 0 &&
                 !kd_params_string(p, NULL) && kd_params_array_length(NULL, "names") == 0,
             "accessors: NULL params or key", "a value came back");
    kd_params_free(p);
    kd_params_free(NULL);
}

/* ---------------------------------------------------------------- closest word */

static void expect_closest(const char *word, int n, const char *const *known, const char *want)
{
    char name[96];
    snprintf(name, sizeof name, "closest: %s -> %s", word, want ? want : "none");
    const char *got = kd_closest_word(word, n, known);
    kt_check(want ? got && !strcmp(got, want) : !got, name, "got %s", got ? got : "NULL");
}

static void test_closest_word(void)
{
    const char *const loss[] = {"temperature", "alpha", "label_smoothing", "logit_stand"};
    const char *const sgd[] = {"lr", "momentum", "nesterov", "weight_decay", "dampening"};
    const char *const sched[] = {"warmup_epochs", "lr_min", "milestones", "gamma"};
    expect_closest("temprature", 4, loss, "temperature");
    expect_closest("tempreature", 4, loss, "temperature");
    expect_closest("Temperature", 4, loss, "temperature");
    expect_closest("lable_smoothing", 4, loss, "label_smoothing");
    expect_closest("alhpa", 4, loss, "alpha");
    expect_closest("momentun", 5, sgd, "momentum");
    expect_closest("nesterof", 5, sgd, "nesterov");
    expect_closest("weight_decya", 5, sgd, "weight_decay");
    expect_closest("warmup_epoch", 4, sched, "warmup_epochs");
    expect_closest("lr", 5, sgd, "lr");
    expect_closest("lrr", 5, sgd, "lr");
    expect_closest("gama", 4, sched, "gamma");

    expect_closest("lr", 4, loss, NULL);
    expect_closest("batch_size", 4, loss, NULL);
    expect_closest("warmup", 4, sched, NULL);
    expect_closest("beta", 4, loss, NULL);
    expect_closest("decay", 5, sgd, NULL);
    expect_closest("x", 4, sched, NULL);
    expect_closest("", 4, loss, NULL);
    expect_closest("temperature", 0, loss, NULL);

    const char *const tie[] = {"ac", "ab", "ad"};
    expect_closest("ae", 3, tie, "ac");
    const char *const nearer[] = {"alphas", "alpha"};
    expect_closest("alpha", 2, nearer, "alpha");
    const char *const with_null[] = {NULL, "gamma"};
    expect_closest("gama", 2, with_null, "gamma");
    kt_check(!kd_closest_word(NULL, 4, loss) && !kd_closest_word("x", 4, NULL),
             "closest: NULL word or list", "not NULL");
}

/* ---------------------------------------------------------------- schemas */

static void test_schema(void)
{
    json_t *schema = parse(kd_schema);
    kd_status st = kd_params_check_schema(schema, label);
    kt_check(st == KD_OK, "schema: the test schema is valid", "%s", kd_last_error());
    json_decref(schema);
    kt_check(kd_params_check_schema(NULL, label) == KD_OK, "schema: absent is empty", "%s",
             kd_last_error());
    schema = parse("{\"n\": {\"type\": \"integer\", \"min\": 0, \"max\": 0, \"doc\": \"only 0\"},"
                   " \"x\": {\"type\": \"number\", \"choices\": [0.5, 1], \"default\": 1,"
                   "         \"doc\": \"half or one\"},"
                   " \"flags\": {\"type\": \"array\", \"items\": \"boolean\", \"default\": [],"
                   "             \"doc\": \"flags\"}}");
    st = kd_params_check_schema(schema, label);
    kt_check(st == KD_OK, "schema: required, numeric choices, empty array default", "%s",
             kd_last_error());
    json_decref(schema);

    expect_schema_error("schema: not an object", "[]",
                        "plugins/kd/manifest.json: provides[0].params: expected an object of "
                        "parameter specs");
    expect_schema_error("schema: spec not an object", "{\"t\": 3}",
                        "plugins/kd/manifest.json: provides[0].params.t: expected an object "
                        "(the parameter's spec)");
    expect_schema_error("schema: empty name", "{\"\": {\"type\": \"number\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params: a parameter name is "
                        "empty");
    expect_schema_error("schema: missing type", "{\"t\": {\"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: missing \"type\"");
    expect_schema_error("schema: unknown type", "{\"t\": {\"type\": \"float\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"type\" must be one "
                        "of \"number\", \"integer\", \"boolean\", \"string\", \"array\"");
    expect_schema_error("schema: missing doc", "{\"t\": {\"type\": \"number\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: missing \"doc\" (one "
                        "line saying what it does)");
    expect_schema_error("schema: doc of two lines",
                        "{\"t\": {\"type\": \"number\", \"doc\": \"a\\nb\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"doc\" must be one "
                        "non-empty line");
    expect_schema_error("schema: default below exclusive min",
                        "{\"temperature\": {\"type\": \"number\", \"default\": 0, \"min\": 0,"
                        " \"exclusive_min\": true, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.temperature: default 0 is "
                        "below min 0 (exclusive)");
    expect_schema_error("schema: default of the wrong type",
                        "{\"t\": {\"type\": \"number\", \"default\": \"4\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: default: expected a "
                        "number, got a string (\"4\")");
    expect_schema_error("schema: default 2.5 for an integer",
                        "{\"t\": {\"type\": \"integer\", \"default\": 2.5, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: default: expected an "
                        "integer, got 2.5");
    expect_schema_error("schema: default not a choice",
                        "{\"r\": {\"type\": \"string\", \"default\": \"max\","
                        " \"choices\": [\"mean\", \"sum\"], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.r: default \"max\" is not "
                        "one of \"mean\", \"sum\"");
    expect_schema_error("schema: default array element",
                        "{\"m\": {\"type\": \"array\", \"items\": \"integer\","
                        " \"default\": [1, \"a\"], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.m[1]: default: expected "
                        "an integer, got a string (\"a\")");
    expect_schema_error("schema: null default",
                        "{\"t\": {\"type\": \"boolean\", \"default\": null, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: default: expected a "
                        "boolean, got null");
    expect_schema_error("schema: misspelt spec key",
                        "{\"t\": {\"type\": \"number\", \"dafault\": 1, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: unknown spec key "
                        "'dafault'; did you mean default?");
    expect_schema_error("schema: unknown spec key",
                        "{\"t\": {\"type\": \"number\", \"color\": 1, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: unknown spec key "
                        "'color'; a spec takes: type, default, min, max, exclusive_min, "
                        "exclusive_max, choices, items, doc, file");
    expect_schema_error("schema: min on a string",
                        "{\"s\": {\"type\": \"string\", \"min\": 1, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.s: \"min\" applies only to "
                        "types number and integer");
    expect_schema_error("schema: exclusive_max on an array",
                        "{\"s\": {\"type\": \"array\", \"items\": \"number\","
                        " \"exclusive_max\": true, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.s: \"exclusive_max\" "
                        "applies only to types number and integer");
    expect_schema_error("schema: min not a number",
                        "{\"t\": {\"type\": \"number\", \"min\": \"0\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"min\" must be a "
                        "number");
    expect_schema_error("schema: exclusive_min not a boolean",
                        "{\"t\": {\"type\": \"number\", \"min\": 0, \"exclusive_min\": 1,"
                        " \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"exclusive_min\" must "
                        "be true or false");
    expect_schema_error("schema: exclusive_min without min",
                        "{\"t\": {\"type\": \"number\", \"exclusive_min\": true, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"exclusive_min\" "
                        "without \"min\"");
    expect_schema_error("schema: min above max",
                        "{\"t\": {\"type\": \"number\", \"min\": 2, \"max\": 1, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: no value fits between "
                        "\"min\" and \"max\"");
    expect_schema_error("schema: empty exclusive range",
                        "{\"t\": {\"type\": \"integer\", \"min\": 1, \"max\": 1.0,"
                        " \"exclusive_max\": true, \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: no value fits between "
                        "\"min\" and \"max\"");
    expect_schema_error("schema: choices on a boolean",
                        "{\"b\": {\"type\": \"boolean\", \"choices\": [true], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.b: \"choices\" applies "
                        "only to types string, number and integer");
    expect_schema_error("schema: empty choices",
                        "{\"s\": {\"type\": \"string\", \"choices\": [], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.s: \"choices\" must be a "
                        "non-empty array");
    expect_schema_error("schema: a number among string choices",
                        "{\"s\": {\"type\": \"string\", \"choices\": [\"a\", 1], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.s.choices[1]: expected a "
                        "string, got an integer (1)");
    expect_schema_error("schema: 1.5 among integer choices",
                        "{\"n\": {\"type\": \"integer\", \"choices\": [1, 1.5], \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.n.choices[1]: expected an "
                        "integer, got 1.5");
    expect_schema_error("schema: array without items",
                        "{\"m\": {\"type\": \"array\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.m: an array needs "
                        "\"items\" (its element type)");
    expect_schema_error("schema: array of arrays",
                        "{\"m\": {\"type\": \"array\", \"items\": \"array\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.m: \"items\" must be one "
                        "of \"number\", \"integer\", \"boolean\", \"string\"");
    expect_schema_error("schema: items on a number",
                        "{\"t\": {\"type\": \"number\", \"items\": \"number\", \"doc\": \"d\"}}",
                        "plugins/kd/manifest.json: provides[0].params.t: \"items\" applies only "
                        "to type array");
}

int main(void)
{
    test_defaults();
    test_given_values();
    test_ignore();
    test_errors();
    test_accessors();
    test_closest_word();
    test_schema();
    test_file_params();
    return kt_finish();
}
