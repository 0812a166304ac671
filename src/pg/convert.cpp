/*
 * convert.cpp - converts JSON values into column Datums with the column type's own input
 * function, so every type (domains, enums, numerics with typmods, arrays) behaves exactly as it
 * does for a literal in SQL.  JSON numbers keep their raw text, so no digit is ever lost.
 *
 * Everything here may raise an error; apply.cpp calls it inside a subtransaction and parks the
 * record that failed.
 */
#include <new>

#include "core/json_doc.hpp"
#include "core/protocol.hpp"
#include "core/record.hpp"

extern "C" {
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "miscadmin.h"
#include "utils/timestamp.h"
}

#include "pg/mapping.hpp"
#include "pg/convert.hpp"

namespace sequin_sync {

namespace {

/*
 * A NUL-terminated copy of JSON text in the server encoding.  A NUL byte (\u0000) cannot be
 * stored in any Postgres text value: that is the record's error.
 */
char *
ServerString(const char *str, size_t len)
{
	if (record::HasNul(str, len))
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("unsupported Unicode escape sequence"),
				 errdetail("\\u0000 cannot be converted to text.")));
	char *copy = pnstrdup(str, len);
	if (GetDatabaseEncoding() != PG_UTF8)
		copy = pg_any_to_server(copy, (int) len, PG_UTF8);
	return copy;
}

/* The column type's input function; a NULL string lets a domain check its NOT NULL. */
Datum
Input(const MappedColumn *col, char *str)
{
	return InputFunctionCall(const_cast<FmgrInfo *>(&col->input), str, col->ioparam, col->typmod);
}

/* A JSON number of Unix epoch seconds into timestamptz/timestamp/date, as Stripe sends times. */
Datum
EpochValue(const MappedColumn *col, const json::Node *value)
{
	char *raw = pnstrdup(value->str, value->len);
	Datum seconds = DirectFunctionCall1(float8in, CStringGetDatum(raw));
	/* to_timestamp(): timestamptz is microseconds since 2000-01-01 UTC, range-checked. */
	Datum ts = DirectFunctionCall1(float8_timestamptz, seconds);
	/* A timestamp without time zone holds the same number read as UTC wall time. */
	if (col->convert == ConvertKind::Date)
		ts = DirectFunctionCall1(timestamp_date, ts);
	if (col->is_domain)
		domain_check(ts, false, col->type, nullptr, nullptr);
	return ts;
}

/* A JSON string as a jsonb string value: no NUL (jsonb cannot hold one), server encoding. */
void
JsonbString(const char *str, uint32 len, JsonbValue *v)
{
	if (record::HasNul(str, len))
		ereport(ERROR,
				(errcode(ERRCODE_UNTRANSLATABLE_CHARACTER),
				 errmsg("unsupported Unicode escape sequence"),
				 errdetail("\\u0000 cannot be converted to text.")));
	char *s = const_cast<char *>(str);
	if (GetDatabaseEncoding() != PG_UTF8) {
		s = pg_any_to_server(pnstrdup(str, len), (int) len, PG_UTF8);
		len = (uint32) strlen(s);
	}
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = (int) len;
}

void
JsonbScalar(const json::Node *n, JsonbValue *v)
{
	switch (n->kind) {
		case json::Kind::Null:
			v->type = jbvNull;
			break;
		case json::Kind::True:
		case json::Kind::False:
			v->type = jbvBool;
			v->val.boolean = n->kind == json::Kind::True;
			break;
		case json::Kind::Number:
			v->type = jbvNumeric;
			v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(pnstrdup(n->str, n->len)),
																 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
			break;
		case json::Kind::String:
			JsonbString(n->str, n->len, v);
			break;
		default:
			elog(ERROR, "not a JSON scalar");
	}
}

/*
 * A JSON object or array straight into jsonb, from the parsed document: no text round trip and
 * no second parse (what jsonb_in would do with the serialized text).  Iterative, like the
 * decoder; jsonb's own limits (nesting depth, sizes) still apply when it is flattened.  Members
 * come in jsonb's key order when the prefetch thread sorted them (Document::SortMembers), so
 * pushJsonbValue's sort of each object finds them sorted; it sorts (and keeps the last of
 * duplicate keys) either way.
 */
Datum
JsonbFromNode(json::Document *doc, const json::Node *root)
{
	struct Frame {
		const json::Node *container;
		const json::Node *child;
	};
	int cap = 32, depth = 0;
	Frame *frames = (Frame *) palloc(sizeof(Frame) * cap);
	JsonbParseState *state = nullptr;
	JsonbValue *result = pushJsonbValue(&state, root->IsObject() ? WJB_BEGIN_OBJECT : WJB_BEGIN_ARRAY, nullptr);
	frames[depth++] = {root, doc->FirstSorted(root)};
	while (depth > 0) {
		Frame *f = &frames[depth - 1];
		const json::Node *c = f->child;
		bool in_object = f->container->IsObject();
		if (c == nullptr) {
			result = pushJsonbValue(&state, in_object ? WJB_END_OBJECT : WJB_END_ARRAY, nullptr);
			depth--;
			continue;
		}
		f->child = doc->NextSorted(c);
		if (in_object) {
			JsonbValue key;
			JsonbString(c->key, c->key_len, &key);
			(void) pushJsonbValue(&state, WJB_KEY, &key);
		}
		if (c->IsObject() || c->IsArray()) {
			check_stack_depth();
			(void) pushJsonbValue(&state, c->IsObject() ? WJB_BEGIN_OBJECT : WJB_BEGIN_ARRAY, nullptr);
			if (depth == cap) {
				cap *= 2;
				frames = (Frame *) repalloc(frames, sizeof(Frame) * cap);
			}
			frames[depth++] = {c, doc->FirstSorted(c)};
		} else {
			JsonbValue v;
			JsonbScalar(c, &v);
			(void) pushJsonbValue(&state, in_object ? WJB_VALUE : WJB_ELEM, &v);
		}
	}
	pfree(frames);
	return JsonbPGetDatum(JsonbValueToJsonb(result));
}

} /* namespace */

const json::Node *
FindColumnSource(const json::Document *doc, const json::Node *rec, const json::Node *const *fields,
				 const MappedColumn *col)
{
	switch (col->source) {
		case SourceKind::Path:
			return record::FindPathSource(*doc, rec, col->path, col->alt_path);
		case SourceKind::DataField:
			return fields[col->field_slot];
		case SourceKind::Deleted:
		case SourceKind::Version:
			return nullptr; /* filled by the engine from the validated message or record */
	}
	return nullptr;
}

Datum
ConvertValue(const MappedColumn *col, json::Document *doc, record::ArrayLiteralWriter *literals,
			 const json::Node *value, bool *isnull)
{
	record::Target target;
	target.convert = col->convert;
	target.jsonb_tree = col->base_type == JSONBOID && !col->pass_as_text;
	target.json_elements = col->json_elements;
	target.string_like = col->string_like;
	record::ValuePlan plan = record::PlanValue(value, target);

	*isnull = false;
	const char *text = plan.text;
	size_t text_len = plan.text_len;
	switch (plan.plan) {
		case record::Plan::Null:
			*isnull = true;
			if (col->is_domain)
				(void) Input(col, nullptr);
			return (Datum) 0;
		case record::Plan::Text:
			break;
		case record::Plan::Serialize:
			if (!doc->Serialize(value, &text, &text_len))
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			break;
		case record::Plan::Epoch:
			return EpochValue(col, value);
		case record::Plan::JsonbTree: {
			Datum d = JsonbFromNode(doc, value);
			if (col->is_domain)
				domain_check(d, false, col->type, nullptr, nullptr);
			return d;
		}
		case record::Plan::JsonElements:
			if (!literals->JsonElementsLiteral(*doc, value, &text, &text_len))
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			break;
		case record::Plan::ArrayLiteral:
			if (!literals->ArrayLiteral(*doc, value, &text, &text_len))
				ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
			break;
		case record::Plan::Mismatch:
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("cannot store a JSON %s in a column of type %s", record::KindName(value->kind),
							format_type_be(col->type)),
					 errhint("Use a json, jsonb, text or array column, or map a field inside it with columns.")));
	}

	char *str = ServerString(text, text_len);
	Datum d = Input(col, str);
	if (col->pass_as_text)
		return PointerGetDatum(cstring_to_text(str));
	return d;
}

} /* namespace sequin_sync */
