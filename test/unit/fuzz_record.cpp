/*
 * fuzz_record.cpp - libFuzzer target for the record-to-row layer (record.cpp), on top of
 * json_doc.cpp and next_reply.cpp.  No Postgres.  Build and run (`make fuzz` does both targets):
 *
 *   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/core/json_doc.cpp \
 *       src/core/next_reply.cpp src/core/record.cpp test/unit/fuzz_record.cpp -o /tmp/fuzz_record
 *   mkdir -p /tmp/fuzz_record_corpus
 *   /tmp/fuzz_record -max_total_time=60 /tmp/fuzz_record_corpus test/unit/corpus/record
 *
 * The input is JSON: an object is one record, an array a list of records, a `/next` reply its
 * items' records.  Every record is validated and then mapped through a fixed set of column
 * shapes (standard paths, nested paths, data fields) and every column target, and the plan is
 * carried out as far as it goes without Postgres (serializing, array literals).  Beyond "no
 * crash, no UB": the validation is checked against an independent reading of the record
 * (strtoll for updated_idx, the order of the checks), accepted ids are non-empty without NUL,
 * updated_idx prints back as its text, every number keeps JSON number syntax, a found column
 * value really has the key asked for (and FieldMatcher finds what FindDataField finds), and every
 * plan fits the value and the column.  The same inputs are read as Sequin Stream change messages
 * too (a whole input, an array's elements, a /receive reply's items): stream::ValidateMessage
 * agrees with an independent reading (strtoull for the version), its fields point into the
 * message, and the version prints back through DecimalText.  Seeds: test/unit/corpus/
 * stream_message/ (the messages of test/fixtures/stream_messages.json and broken ones).
 */
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"
#include "core/next_reply.hpp"
#include "core/record.hpp"
#include "core/stream_message.hpp"
#include "core/stream_reply.hpp"

using namespace sequin_sync;
using record::FieldError;
using record::Plan;

namespace {

[[noreturn]] void
Die(const char *why)
{
	std::fprintf(stderr, "fuzz_record: %s\n", why);
	std::abort();
}

#define ENSURE(cond)                   \
	do {                               \
		if (!(cond))                   \
			Die("failed: " #cond);     \
	} while (0)

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
bool
IsJsonNumber(std::string_view s)
{
	size_t i = 0, n = s.size();
	auto digits = [&]() {
		size_t start = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		return i > start;
	};
	if (i < n && s[i] == '-')
		i++;
	if (i < n && s[i] == '0')
		i++;
	else if (!(i < n && s[i] >= '1' && s[i] <= '9' && digits()))
		return false;
	if (i < n && s[i] == '.') {
		i++;
		if (!digits())
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (!digits())
			return false;
	}
	return i == n;
}

/* updated_idx as an independent reader sees it: an integer literal that strtoll takes whole. */
bool
ReferenceInt64(const json::Node *n, int64_t *out)
{
	if (n == nullptr || !n->IsNumber())
		return false;
	std::string_view s = n->Str();
	if (s.find_first_of(".eE") != std::string_view::npos)
		return false;
	std::string text(s);
	errno = 0;
	char *end = nullptr;
	long long v = std::strtoll(text.c_str(), &end, 10);
	if (errno == ERANGE || end != text.c_str() + text.size() || text.empty())
		return false;
	*out = v;
	return true;
}

bool
UsableString(const json::Node *n)
{
	return n != nullptr && n->IsString() && n->len > 0 && std::memchr(n->str, '\0', n->len) == nullptr;
}

/* The first failing check, read straight from the record (record.hpp's documented order). */
FieldError
ReferenceError(const json::Document &doc, const json::Node *rec)
{
	if (rec == nullptr || !rec->IsObject())
		return FieldError::NotObject;
	const json::Node *id = doc.Find(rec, "id");
	if (id == nullptr || id->IsNull())
		return FieldError::NoId;
	if (!UsableString(id))
		return FieldError::BadId;
	const json::Node *idx = doc.Find(rec, "updated_idx");
	int64_t v;
	if (idx == nullptr || idx->IsNull())
		return FieldError::NoUpdatedIdx;
	if (!ReferenceInt64(idx, &v))
		return FieldError::BadUpdatedIdx;
	const json::Node *del = doc.Find(rec, "deleted");
	if (del != nullptr && !del->IsNull() && !del->IsBool())
		return FieldError::BadDeleted;
	const json::Node *data = doc.Find(rec, "data");
	if (data != nullptr && !data->IsNull() && !data->IsObject())
		return FieldError::BadData;
	const json::Node *coll = doc.Find(rec, "collection_id");
	if (coll == nullptr || coll->IsNull())
		coll = doc.Find(rec, "collection_slug");
	if (coll == nullptr || coll->IsNull())
		return FieldError::NoCollection;
	if (!UsableString(coll))
		return FieldError::BadCollection;
	if ((data == nullptr || data->IsNull()) && !(del != nullptr && del->kind == json::Kind::True))
		return FieldError::NoData;
	return FieldError::None;
}

void
CheckFields(const json::Document &doc, const json::Node *rec)
{
	record::Fields f;
	FieldError err = record::ValidateFields(doc, rec, &f);
	if (err != ReferenceError(doc, rec))
		Die("validation disagrees with the reference");
	const char *msg = record::FieldErrorMessage(err);
	ENSURE(msg != nullptr && (err == FieldError::None) == (msg[0] == '\0'));

	if (f.collection != nullptr) {
		ENSURE(f.collection_len > 0 && std::memchr(f.collection, '\0', f.collection_len) == nullptr);
		ENSURE(rec->IsObject());
	}
	if (err != FieldError::None)
		return;

	ENSURE(f.id != nullptr && f.id_len > 0 && std::memchr(f.id, '\0', f.id_len) == nullptr);
	const json::Node *id = doc.Find(rec, "id");
	ENSURE(id->str == f.id && id->len == f.id_len);

	/* updated_idx round-trips: printed back it is its own text ("-0" aside) */
	const json::Node *idx = doc.Find(rec, "updated_idx");
	char buf[32];
	std::snprintf(buf, sizeof(buf), "%lld", (long long) f.updated_idx);
	ENSURE(idx->Str() == buf || (idx->Str() == "-0" && f.updated_idx == 0));
	int64_t ref = 0;
	ENSURE(ReferenceInt64(idx, &ref) && ref == f.updated_idx);

	const json::Node *del = doc.Find(rec, "deleted");
	ENSURE(f.deleted == (del != nullptr && del->kind == json::Kind::True));
	const json::Node *data = doc.Find(rec, "data");
	ENSURE(f.data == (data != nullptr && data->IsObject() ? data : nullptr));
	ENSURE(f.data != nullptr || f.deleted);
	ENSURE(f.collection != nullptr);
}

/* Every column target the mapping can produce. */
std::vector<record::Target>
AllTargets()
{
	std::vector<record::Target> out;
	const ConvertKind kinds[] = {ConvertKind::Scalar, ConvertKind::Json, ConvertKind::Array,
								 ConvertKind::Timestamptz, ConvertKind::Timestamp, ConvertKind::Date};
	for (ConvertKind k : kinds)
		for (int flags = 0; flags < 8; flags++) {
			record::Target t;
			t.convert = k;
			t.jsonb_tree = flags & 1;
			t.json_elements = flags & 2;
			t.string_like = flags & 4;
			out.push_back(t);
		}
	return out;
}

bool
IsEpochKind(ConvertKind k)
{
	return k == ConvertKind::Timestamptz || k == ConvertKind::Timestamp || k == ConvertKind::Date;
}

/* What the Postgres side would do with a plan, as far as it goes without Postgres. */
void
Carry(json::Document &doc, const json::Node *value, Plan plan)
{
	static record::ArrayLiteralWriter writer;
	const char *out = nullptr;
	size_t len = 0;
	switch (plan) {
		case Plan::Serialize: {
			ENSURE(doc.Serialize(value, &out, &len));
			ENSURE(!record::HasNul(out, len)); /* \u0000 is escaped, never a raw NUL */
			std::unique_ptr<char[]> copy(new char[len]);
			std::memcpy(copy.get(), out, len);
			json::Document again;
			ENSURE(again.Parse(copy.get(), len));
			ENSURE(again.Root()->kind == value->kind);
			break;
		}
		case Plan::JsonElements:
			ENSURE(writer.JsonElementsLiteral(doc, value, &out, &len));
			ENSURE(len >= 2 && out[0] == '{' && out[len - 1] == '}');
			ENSURE(!record::HasNul(out, len)); /* every element is JSON text: \u0000 stays escaped */
			break;
		case Plan::ArrayLiteral:
			ENSURE(writer.ArrayLiteral(doc, value, &out, &len));
			ENSURE(len >= 2 && out[0] == '{' && out[len - 1] == '}');
			/* a NUL in the literal comes only from a string holding one */
			(void) record::HasNul(out, len);
			break;
		default:
			break;
	}
}

void
CheckPlans(json::Document &doc, const json::Node *value, const std::vector<record::Target> &targets)
{
	bool carried[8] = {};
	for (const record::Target &t : targets) {
		record::ValuePlan p = record::PlanValue(value, t);
		json::Kind kind = value != nullptr ? value->kind : json::Kind::Null;
		bool container = kind == json::Kind::Array || kind == json::Kind::Object;
		switch (p.plan) {
			case Plan::Null:
				ENSURE(kind == json::Kind::Null);
				break;
			case Plan::Text:
				ENSURE(!container && kind != json::Kind::Null);
				if (kind == json::Kind::String)
					ENSURE(t.convert != ConvertKind::Json && p.text == value->str && p.text_len == value->len);
				else if (kind == json::Kind::Number)
					ENSURE(!IsEpochKind(t.convert) && p.text == value->str && p.text_len == value->len);
				else
					ENSURE(std::string_view(p.text, p.text_len) == (kind == json::Kind::True ? "true" : "false"));
				(void) record::HasNul(p.text, p.text_len);
				break;
			case Plan::Serialize:
				ENSURE((kind == json::Kind::String && t.convert == ConvertKind::Json) ||
					   (container && (t.convert == ConvertKind::Json || t.string_like)));
				break;
			case Plan::Epoch:
				ENSURE(kind == json::Kind::Number && IsEpochKind(t.convert));
				break;
			case Plan::JsonbTree:
				ENSURE(container && t.convert == ConvertKind::Json && t.jsonb_tree);
				break;
			case Plan::JsonElements:
				ENSURE(kind == json::Kind::Array && t.convert == ConvertKind::Array && t.json_elements);
				break;
			case Plan::ArrayLiteral:
				ENSURE(kind == json::Kind::Array && t.convert == ConvertKind::Array && !t.json_elements);
				break;
			case Plan::Mismatch:
				ENSURE(container && t.convert != ConvertKind::Json && !t.string_like &&
					   !(t.convert == ConvertKind::Array && kind == json::Kind::Array));
				ENSURE(std::strcmp(record::KindName(kind), kind == json::Kind::Array ? "array" : "object") == 0);
				break;
		}
		if (p.plan != Plan::Text)
			ENSURE(p.text == nullptr && p.text_len == 0);
		/* one of each plan per value is enough: they do not depend on the other flags */
		size_t slot = static_cast<size_t>(p.plan);
		if (slot < 8 && !carried[slot]) {
			carried[slot] = true;
			Carry(doc, value, p.plan);
		}
	}
}

struct PathColumn {
	const char *path;
	const char *alt_path;
};

const PathColumn kPathColumns[] = {
	{"id", nullptr},
	{"updated_idx", nullptr},
	{"collection_id", "collection_slug"},
	{"sync.id", "sync_id"},
	{"sync.metadata", "sync_metadata"},
	{"inserted_at", "created_at"},
	{"data", nullptr},
	{"data.a", nullptr},
	{"data.a.b", nullptr},
	{"data.a.b.c.d", nullptr},
	{"a..b", "id"},
	{".", nullptr},
	{"", "data.x"},
};

const char *const kDataFields[] = {"amount", "first_name", "FirstName", "a", "x", "_", "", "a.b", "Id"};

void
CheckColumns(json::Document &doc, const json::Node *rec, const std::vector<record::Target> &targets)
{
	record::Fields f;
	(void) record::ValidateFields(doc, rec, &f);
	const json::Node *data = f.data;
	if (rec == nullptr || !rec->IsObject())
		return;

	for (const PathColumn &c : kPathColumns) {
		const json::Node *v = record::FindPathSource(doc, rec, c.path, c.alt_path);
		const json::Node *first = doc.FindPath(rec, c.path);
		if (first != nullptr && !first->IsNull())
			ENSURE(v == first);
		else if (c.alt_path != nullptr)
			ENSURE(v == doc.FindPath(rec, c.alt_path));
		else
			ENSURE(v == first);
		CheckPlans(doc, v, targets);
	}

	for (const char *name : kDataFields) {
		const json::Node *v = record::FindDataField(doc, data, name);
		if (data == nullptr) {
			ENSURE(v == nullptr);
			continue;
		}
		if (v != nullptr)
			ENSURE(v->Key() == name || record::NormalizedEquals(v->Key(), name));
		else
			for (const json::Node *m = doc.First(data); m != nullptr; m = doc.Next(m))
				ENSURE(!record::NormalizedEquals(m->Key(), name));
		CheckPlans(doc, v, targets);
	}

	/* every top-level and data member is found by its own key (the last of duplicates wins) */
	int budget = 64;
	for (const json::Node *m = doc.First(rec); m != nullptr && budget > 0; m = doc.Next(m), budget--) {
		std::string key(m->Key());
		if (key.empty() || key.find('.') != std::string::npos || key.find('\0') != std::string::npos)
			continue;
		const json::Node *v = record::FindPathSource(doc, rec, key.c_str(), nullptr);
		ENSURE(v != nullptr && v->Key() == m->Key());
		if (m->IsObject()) {
			const json::Node *inner = doc.First(m);
			if (inner != nullptr && !inner->Key().empty() && inner->Key().find('.') == std::string_view::npos &&
				inner->Key().find('\0') == std::string_view::npos && v == m) {
				std::string path = key + "." + std::string(inner->Key());
				const json::Node *w = record::FindPathSource(doc, rec, path.c_str(), nullptr);
				ENSURE(w != nullptr && w->Key() == inner->Key());
			}
		}
		CheckPlans(doc, v, targets);
	}
	budget = 64;
	std::vector<std::string_view> names(std::begin(kDataFields), std::end(kDataFields));
	for (const json::Node *m = doc.First(data); m != nullptr && budget > 0; m = doc.Next(m), budget--) {
		const json::Node *v = record::FindDataField(doc, data, m->Key());
		ENSURE(v != nullptr && v->Key() == m->Key());
		CheckPlans(doc, v, targets);
		names.push_back(m->Key());
	}

	/* the matcher of a mapping finds, in one walk, what FindDataField finds name by name */
	record::FieldMatcher matcher;
	ENSURE(matcher.Build(names.data(), names.size()) && matcher.Size() == names.size());
	std::vector<const json::Node *> found(names.size());
	matcher.Match(doc, data, found.data());
	for (size_t i = 0; i < names.size(); i++)
		ENSURE(found[i] == record::FindDataField(doc, data, names[i]));
}

/* Every number keeps its exact JSON text, set-aside big numbers included. */
void
CheckNumbers(const json::Document &doc)
{
	std::vector<const json::Node *> todo{doc.Root()};
	while (!todo.empty()) {
		const json::Node *n = todo.back();
		todo.pop_back();
		if (n->IsNumber()) {
			ENSURE(IsJsonNumber(n->Str()));
			int64_t a = 0, b = 0;
			bool ours = json::ParseInt64(n, &a);
			bool ref = ReferenceInt64(n, &b);
			ENSURE(ours == ref && (!ours || a == b));
		}
		for (const json::Node *c = doc.First(n); c != nullptr; c = doc.Next(c))
			todo.push_back(c);
	}
}

/* A version part as an independent reader sees it: digits only, strtoull takes them whole. */
bool
ReferenceUnsigned(const json::Node *n, unsigned long long max, unsigned long long *out)
{
	if (n == nullptr || !n->IsNumber())
		return false;
	std::string text(n->Str());
	if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
		return false;
	errno = 0;
	char *end = nullptr;
	unsigned long long v = std::strtoull(text.c_str(), &end, 10);
	if (errno == ERANGE || end != text.c_str() + text.size() || v > max)
		return false;
	*out = v;
	return true;
}

bool
AbsentOrNull(const json::Node *n)
{
	return n == nullptr || n->IsNull();
}

/* The first failing check of a change message (stream_message.hpp's documented order). */
stream::MessageError
ReferenceMessageError(const json::Document &doc, const json::Node *msg)
{
	using stream::MessageError;
	if (msg == nullptr || !msg->IsObject())
		return MessageError::NotObject;
	const json::Node *action = doc.Find(msg, "action");
	const json::Node *md = doc.Find(msg, "metadata");
	if (action == nullptr && md == nullptr)
		return MessageError::Transformed;
	if (AbsentOrNull(action))
		return MessageError::NoAction;
	std::string_view a = action->IsString() ? action->Str() : std::string_view("?");
	if (a != "insert" && a != "update" && a != "delete" && a != "read")
		return MessageError::BadAction;
	if (md == nullptr || !md->IsObject())
		return MessageError::NoMetadata;
	if (!UsableString(doc.Find(md, "table_schema")) || !UsableString(doc.Find(md, "table_name")))
		return MessageError::BadTable;
	const json::Node *lsn = doc.Find(md, "commit_lsn");
	const json::Node *idx = doc.Find(md, "commit_idx");
	unsigned long long l, i;
	if (a == "read") {
		if (!AbsentOrNull(lsn) || !AbsentOrNull(idx))
			return MessageError::ReadVersion;
	} else if (AbsentOrNull(lsn) || AbsentOrNull(idx))
		return MessageError::NoVersion;
	else if (!ReferenceUnsigned(lsn, UINT64_MAX, &l) || !ReferenceUnsigned(idx, UINT32_MAX, &i))
		return MessageError::BadVersion;
	const json::Node *record = doc.Find(msg, "record");
	if (record == nullptr || !record->IsObject())
		return MessageError::NoRecord;
	const json::Node *changes = doc.Find(msg, "changes");
	if (!AbsentOrNull(changes) && !changes->IsObject())
		return MessageError::BadChanges;
	return MessageError::None;
}

void
CheckMessage(const json::Document &doc, const json::Node *msg)
{
	stream::Message m;
	stream::MessageError err = stream::ValidateMessage(doc, msg, &m);
	if (err != ReferenceMessageError(doc, msg))
		Die("message validation disagrees with the reference");
	const char *text = stream::MessageErrorMessage(err);
	ENSURE(text != nullptr && (err == stream::MessageError::None) == (text[0] == '\0'));
	/* the table, whenever it is captured, is the metadata's, usable as a name */
	ENSURE(m.schema.empty() == m.table.empty());
	if (!m.schema.empty()) {
		const json::Node *md = doc.Find(msg, "metadata");
		ENSURE(md != nullptr && doc.Find(md, "table_schema")->Str() == m.schema &&
			   doc.Find(md, "table_name")->Str() == m.table);
		ENSURE(m.schema.find('\0') == std::string_view::npos && m.table.find('\0') == std::string_view::npos);
	}
	if (err != stream::MessageError::None)
		return;
	const json::Node *md = doc.Find(msg, "metadata");
	ENSURE(m.record == doc.Find(msg, "record") && m.record->IsObject());
	ENSURE(m.changes == nullptr || (m.changes == doc.Find(msg, "changes") && m.changes->IsObject()));
	ENSURE(m.has_version == (m.action != stream::Action::Read));
	if (m.has_version) {
		/* the version prints back as its parts' text */
		char buf[40];
		size_t n = stream::DecimalText(m.commit_lsn, buf);
		ENSURE(doc.Find(md, "commit_lsn")->Str() == std::string_view(buf, n));
		n = stream::DecimalText(m.commit_idx, buf);
		ENSURE(doc.Find(md, "commit_idx")->Str() == std::string_view(buf, n));
		unsigned __int128 v = stream::Version(m.commit_lsn, m.commit_idx);
		ENSURE(static_cast<uint64_t>(v >> 32) == m.commit_lsn && static_cast<uint32_t>(v) == m.commit_idx);
		n = stream::DecimalText(v, buf);
		ENSURE(n >= 1 && n <= 29 && buf[n] == '\0');
	} else
		ENSURE(m.commit_lsn == 0 && m.commit_idx == 0);
	(void) stream::IsUnchangedToast(doc.Find(m.record, "id"));
}

} /* namespace */

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const std::vector<record::Target> targets = AllTargets();

	std::unique_ptr<char[]> buf(new char[size]);
	if (size != 0)
		std::memcpy(buf.get(), data, size);
	json::Document doc;
	if (!doc.Parse(buf.get(), size)) {
		/* the layer is safe on anything, even without a document */
		record::Fields f;
		ENSURE(record::ValidateFields(doc, doc.Root(), &f) == FieldError::NotObject);
		ENSURE(record::FindPathSource(doc, nullptr, "id", "x") == nullptr);
		ENSURE(record::FindDataField(doc, nullptr, "id") == nullptr);
		stream::Message m;
		ENSURE(stream::ValidateMessage(doc, doc.Root(), &m) == stream::MessageError::NotObject);
		return 0;
	}
	CheckNumbers(doc);

	std::vector<const json::Node *> records;
	const json::Node *root = doc.Root();
	if (root->IsArray()) {
		for (const json::Node *e = doc.First(root); e != nullptr && records.size() < 64; e = doc.Next(e))
			records.push_back(e);
	} else {
		records.push_back(root);
		NextReply reply;
		std::string error;
		if (DecodeNextReply(doc, &reply, &error))
			for (const NextReplyItem &item : reply.items)
				if (records.size() < 64)
					records.push_back(item.record);
	}

	for (const json::Node *rec : records) {
		CheckFields(doc, rec);
		CheckColumns(doc, rec, targets);
		CheckMessage(doc, rec);
	}
	StreamReply stream_reply;
	std::string stream_error;
	if (DecodeStreamReply(doc, &stream_reply, &stream_error)) {
		size_t budget = 64;
		for (const StreamReplyItem &item : stream_reply.items)
			if (budget-- > 0)
				CheckMessage(doc, item.message);
	}
	return 0;
}
