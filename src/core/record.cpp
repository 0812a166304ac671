/*
 * record.cpp - the Postgres-free half of turning a record into row values (see record.hpp).
 */
#include "core/record.hpp"

#include <cstring>
#include <new>
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
		case FieldError::NoData:
			return "record has no \"data\"";
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
	if (!json::ParseInt64(idx, &out->updated_idx))
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
	/* A version without its data would overwrite good values with NULLs; a delete needs none. */
	if (out->data == nullptr && !out->deleted)
		return FieldError::NoData;
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

namespace {

inline char
AsciiLower(char c)
{
	return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

} /* namespace */

bool
NormalizedEquals(std::string_view a, std::string_view b) noexcept
{
	size_t i = 0;
	size_t j = 0;

	for (;;) {
		while (i < a.size() && a[i] == '_')
			i++;
		while (j < b.size() && b[j] == '_')
			j++;
		if (i == a.size() || j == b.size())
			return i == a.size() && j == b.size();
		if (AsciiLower(a[i]) != AsciiLower(b[j]))
			return false;
		i++;
		j++;
	}
}

const json::Node *
FindDataField(const json::Document &doc, const json::Node *data, std::string_view name) noexcept
{
	if (data == nullptr || !data->IsObject())
		return nullptr;
	const json::Node *v = doc.Find(data, name);
	if (v != nullptr)
		return v;
	const json::Node *match = nullptr;
	for (const json::Node *m = doc.First(data); m != nullptr; m = doc.Next(m))
		if (NormalizedEquals(m->Key(), name))
			match = m;
	return match;
}

namespace {

/* FNV-1a over the name as NormalizedEquals sees it: ASCII lower case, underscores skipped. */
uint64_t
NormalizedHash(const char *s, size_t len) noexcept
{
	uint64_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '_')
			continue;
		h ^= static_cast<unsigned char>(AsciiLower(s[i]));
		h *= 1099511628211ULL;
	}
	return h;
}

} /* namespace */

void
FieldMatcher::Clear() noexcept
{
	names_.clear();
	slots_.clear();
	groups_.clear();
	table_.clear();
	mask_ = 0;
}

bool
FieldMatcher::Build(const std::string_view *names, size_t count) noexcept
{
	Clear();
	try {
		size_t total = 0;
		for (size_t i = 0; i < count; i++)
			total += names[i].size();
		/* offsets and counts are 32-bit: far beyond any table's columns */
		if (total > UINT32_MAX / 4 || count > UINT32_MAX / 4)
			return false;
		names_.reserve(2 * total);
		slots_.reserve(count);
		for (size_t i = 0; i < count; i++) {
			slots_.push_back(Slot{static_cast<uint32_t>(names_.size()), static_cast<uint32_t>(names[i].size()), kNone});
			names_.append(names[i]);
		}

		size_t cap = 8;
		while (cap < 2 * count)
			cap *= 2;
		table_.assign(cap, 0);
		mask_ = cap - 1;
		/* Slots are chained in reverse and then walked from the head: any order is right,
		 * since Match treats every slot of a group alike. */
		for (uint32_t i = 0; i < slots_.size(); i++) {
			std::string_view name = Name(i);
			uint64_t h = NormalizedHash(name.data(), name.size());
			uint64_t pos = h & mask_;
			for (; table_[pos] != 0; pos = (pos + 1) & mask_) {
				const Group &g = groups_[table_[pos] - 1];
				if (g.hash == h && NormalizedEquals(name, std::string_view(names_.data() + g.norm_off, g.norm_len)))
					break;
			}
			if (table_[pos] == 0) {
				Group g{h, static_cast<uint32_t>(names_.size()), 0, kNone};
				for (char c : name)
					if (c != '_')
						names_.push_back(AsciiLower(c));
				g.norm_len = static_cast<uint32_t>(names_.size() - g.norm_off);
				groups_.push_back(g);
				table_[pos] = static_cast<uint32_t>(groups_.size());
			}
			Group &g = groups_[table_[pos] - 1];
			slots_[i].next_same = g.first_slot;
			g.first_slot = i;
		}
		return true;
	} catch (...) {
		Clear();
		return false;
	}
}

/*
 * One walk over the members.  A member that normalises to a slot's name replaces what the slot
 * has unless that is an exact match and the member is not: so a slot ends with the last exact
 * match when there is one, else the last normalised match - FindDataField's answer.
 */
void
FieldMatcher::Match(const json::Document &doc, const json::Node *data, const json::Node **out) const noexcept
{
	for (size_t i = 0; i < slots_.size(); i++)
		out[i] = nullptr;
	if (data == nullptr || !data->IsObject() || slots_.empty())
		return;
	doc.ForEachChild(data, [&](const json::Node &m) {
		uint64_t h = NormalizedHash(m.key, m.key_len);
		for (uint64_t pos = h & mask_; table_[pos] != 0; pos = (pos + 1) & mask_) {
			const Group &g = groups_[table_[pos] - 1];
			if (g.hash != h || !NormalizedEquals(m.Key(), std::string_view(names_.data() + g.norm_off, g.norm_len)))
				continue;
			for (uint32_t s = g.first_slot; s != kNone; s = slots_[s].next_same) {
				const json::Node *prev = out[s];
				std::string_view name = Name(s);
				if (prev == nullptr || m.Key() == name || prev->Key() != name)
					out[s] = &m;
			}
			return;
		}
	});
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

/* Inside a double-quoted array element, '"' and '\\' take a backslash. */
void
ArrayLiteralWriter::AppendQuoted(const char *text, size_t len)
{
	out_.push_back('"');
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] != '"' && text[i] != '\\')
			continue;
		out_.append(text + run, i - run);
		out_.push_back('\\');
		run = i; /* the quote or backslash itself starts the next run */
	}
	out_.append(text + run, len - run);
	out_.push_back('"');
}

/* Clears the outputs; whether the arguments are usable: an array of doc, somewhere to put it. */
bool
ArrayLiteralWriter::Start(const json::Document &doc, const json::Node *array, const char **out, size_t *out_len) noexcept
{
	if (out != nullptr)
		*out = nullptr;
	if (out_len != nullptr)
		*out_len = 0;
	return doc.Owns(array) && array->IsArray() && out != nullptr && out_len != nullptr;
}

/*
 * A walk over the array with an explicit stack of open (sub-)arrays: an element that is an
 * array opens a sub-array, anything else is written whole (objects as their JSON text).
 */
bool
ArrayLiteralWriter::ArrayLiteral(json::Document &doc, const json::Node *array, const char **out,
								 size_t *out_len) noexcept
{
	if (!Start(doc, array, out, out_len))
		return false;
	try {
		out_.clear();
		stack_.clear();
		out_.push_back('{');
		stack_.push_back(array);
		const json::Node *cur = doc.First(array);
		for (;;) {
			if (cur == nullptr) {
				/* end of the innermost open array */
				out_.push_back('}');
				const json::Node *closed = stack_.back();
				stack_.pop_back();
				if (stack_.empty())
					break;
				cur = doc.Next(closed);
				if (cur != nullptr)
					out_.push_back(',');
				continue;
			}
			switch (cur->kind) {
				case json::Kind::Array:
					stack_.push_back(cur);
					out_.push_back('{');
					cur = doc.First(cur);
					continue;
				case json::Kind::Null:
					out_.append("NULL");
					break;
				case json::Kind::False:
					out_.append("\"false\"");
					break;
				case json::Kind::True:
					out_.append("\"true\"");
					break;
				case json::Kind::Number:
				case json::Kind::String:
					AppendQuoted(cur->str, cur->len);
					break;
				case json::Kind::Object: {
					const char *text;
					size_t len;
					if (!doc.Serialize(cur, &text, &len))
						return false;
					AppendQuoted(text, len);
					break;
				}
			}
			cur = doc.Next(cur);
			if (cur != nullptr)
				out_.push_back(',');
		}
		*out = out_.c_str();
		*out_len = out_.size();
		return true;
	} catch (...) {
		out_.clear();
		stack_.clear();
		return false;
	}
}

bool
ArrayLiteralWriter::JsonElementsLiteral(json::Document &doc, const json::Node *array, const char **out,
										size_t *out_len) noexcept
{
	if (!Start(doc, array, out, out_len))
		return false;
	try {
		out_.assign(1, '{');
		for (const json::Node *e = doc.First(array); e != nullptr; e = doc.Next(e)) {
			if (out_.size() > 1)
				out_.push_back(',');
			if (e->IsNull()) {
				out_.append("NULL");
				continue;
			}
			const char *text;
			size_t len;
			if (!doc.Serialize(e, &text, &len))
				return false;
			AppendQuoted(text, len);
		}
		out_.push_back('}');
		*out = out_.c_str();
		*out_len = out_.size();
		return true;
	} catch (...) {
		out_.clear();
		return false;
	}
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
