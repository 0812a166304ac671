/*
 * record.cpp - the Postgres-free half of turning a record into row values (see record.hpp).
 */
#include "core/record.hpp"

#include <cstring>
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace record {

const char *
FieldErrorMessage(FieldError err) noexcept
{
	switch (err) {
		case FieldError::None:
			return "";
		case FieldError::NotObject:
			return "record is not a JSON object";
		case FieldError::NoId:
			return "record has no \"id\"";
		case FieldError::BadId:
			return "record field \"id\" must be a non-empty string";
		case FieldError::NoUpdatedIdx:
			return "record has no \"updated_idx\"";
		case FieldError::BadUpdatedIdx:
			return "record field \"updated_idx\" must be an integer between -9223372036854775808 and 9223372036854775807";
		case FieldError::BadDeleted:
			return "record field \"deleted\" must be a boolean";
		case FieldError::BadData:
			return "record field \"data\" must be an object";
		case FieldError::NoCollection:
			return "record has no \"collection_id\" or \"collection_slug\"";
		case FieldError::BadCollection:
			return "record field \"collection_id\" must be a non-empty string";
	}
	return "invalid record";
}

bool
HasNul(const char *text, size_t len) noexcept
{
	return len != 0 && std::memchr(text, '\0', len) != nullptr;
}

bool
ParseInt64(const json::Node *n, int64_t *out) noexcept
{
	if (n == nullptr || !n->IsNumber() || !n->IsIntegerText() || n->len > 20)
		return false;
	const char *p = n->str;
	const char *end = n->str + n->len;
	bool neg = false;
	if (*p == '-') {
		neg = true;
		p++;
	}
	uint64_t v = 0;
	for (; p < end; p++) {
		uint64_t digit = (uint64_t) (*p - '0');
		if (v > (UINT64_MAX - digit) / 10)
			return false;
		v = v * 10 + digit;
	}
	if (neg) {
		if (v > (uint64_t) INT64_MAX + 1)
			return false;
		*out = (int64_t) (0 - v);
	} else {
		if (v > (uint64_t) INT64_MAX)
			return false;
		*out = (int64_t) v;
	}
	return true;
}

FieldError
ValidateFields(const json::Document &doc, const json::Node *rec, Fields *out) noexcept
{
	*out = Fields();
	if (rec == nullptr || !rec->IsObject())
		return FieldError::NotObject;

	const json::Node *coll = doc.Find(rec, "collection_id");
	if (coll == nullptr || coll->IsNull())
		coll = doc.Find(rec, "collection_slug");
	if (coll != nullptr && coll->IsString() && coll->len > 0 && !HasNul(coll->str, coll->len)) {
		out->collection = coll->str;
		out->collection_len = coll->len;
	}

	const json::Node *id = doc.Find(rec, "id");
	if (id == nullptr || id->IsNull())
		return FieldError::NoId;
	if (!id->IsString() || id->len == 0 || HasNul(id->str, id->len))
		return FieldError::BadId;
	out->id = id->str;
	out->id_len = id->len;

	const json::Node *idx = doc.Find(rec, "updated_idx");
	if (idx == nullptr || idx->IsNull())
		return FieldError::NoUpdatedIdx;
	if (!ParseInt64(idx, &out->updated_idx))
		return FieldError::BadUpdatedIdx;

	const json::Node *deleted = doc.Find(rec, "deleted");
	if (deleted != nullptr && !deleted->IsNull()) {
		if (!deleted->IsBool())
			return FieldError::BadDeleted;
		out->deleted = deleted->kind == json::Kind::True;
	}

	const json::Node *data = doc.Find(rec, "data");
	if (data != nullptr && !data->IsNull() && !data->IsObject())
		return FieldError::BadData;
	out->data = data != nullptr && data->IsObject() ? data : nullptr;

	if (coll == nullptr || coll->IsNull())
		return FieldError::NoCollection;
	if (out->collection == nullptr)
		return FieldError::BadCollection;
	return FieldError::None;
}

const json::Node *
FindPathSource(const json::Document &doc, const json::Node *rec, const char *path, const char *alt_path) noexcept
{
	const json::Node *v = path != nullptr ? doc.FindPath(rec, path) : nullptr;
	if ((v == nullptr || v->IsNull()) && alt_path != nullptr)
		v = doc.FindPath(rec, alt_path);
	return v;
}

const json::Node *
FindDataField(const json::Document &doc, const json::Node *data, std::string_view name) noexcept
{
	if (data == nullptr)
		return nullptr;
	const json::Node *v = doc.Find(data, name);
	if (v != nullptr)
		return v;
	const json::Node *match = nullptr;
	for (const json::Node *m = doc.First(data); m != nullptr; m = doc.Next(m))
		if (json::NormalizedEquals(m->Key(), name))
			match = m;
	return match;
}

ValuePlan
PlanValue(const json::Node *value, const Target &target) noexcept
{
	ValuePlan p;
	if (value == nullptr)
		return p;
	switch (value->kind) {
		case json::Kind::Null:
			return p;
		case json::Kind::String:
			if (target.convert == ConvertKind::Json) {
				p.plan = Plan::Serialize;
			} else {
				p.plan = Plan::Text;
				p.text = value->str;
				p.text_len = value->len;
			}
			return p;
		case json::Kind::Number:
			if (target.convert == ConvertKind::Timestamptz || target.convert == ConvertKind::Timestamp ||
				target.convert == ConvertKind::Date) {
				p.plan = Plan::Epoch;
			} else {
				p.plan = Plan::Text;
				p.text = value->str;
				p.text_len = value->len;
			}
			return p;
		case json::Kind::True:
			p.plan = Plan::Text;
			p.text = "true";
			p.text_len = 4;
			return p;
		case json::Kind::False:
			p.plan = Plan::Text;
			p.text = "false";
			p.text_len = 5;
			return p;
		case json::Kind::Array:
		case json::Kind::Object:
			if (target.convert == ConvertKind::Json && target.jsonb_tree)
				p.plan = Plan::JsonbTree;
			else if (target.convert == ConvertKind::Array && value->IsArray())
				p.plan = target.json_elements ? Plan::JsonElements : Plan::ArrayLiteral;
			else if (target.convert == ConvertKind::Json || target.string_like)
				p.plan = Plan::Serialize;
			else
				p.plan = Plan::Mismatch;
			return p;
	}
	return p;
}

const char *
KindName(json::Kind kind) noexcept
{
	switch (kind) {
		case json::Kind::Null:
			return "null";
		case json::Kind::True:
		case json::Kind::False:
			return "boolean";
		case json::Kind::Number:
			return "number";
		case json::Kind::String:
			return "string";
		case json::Kind::Array:
			return "array";
		case json::Kind::Object:
			return "object";
	}
	return "value";
}

} /* namespace record */
} /* namespace sequin_sync */
