/*
 * batch_prep.cpp - see batch_prep.hpp.
 */
#include "core/batch_prep.hpp"

#include <new>
#include "core/cpp_only.hpp" // must be the last include

namespace sequin_sync {
namespace prep {

bool
Locator::Build(const ColumnSpec *columns, size_t ncolumns, const std::string_view *field_names,
			   size_t nfields) noexcept
{
	try {
		columns_.clear();
		columns_.reserve(ncolumns);
		for (size_t c = 0; c < ncolumns; c++) {
			const ColumnSpec &spec = columns[c];
			Column col;
			col.source = spec.source;
			col.path = spec.path != nullptr ? spec.path : "";
			col.has_alt = spec.alt_path != nullptr;
			col.alt_path = col.has_alt ? spec.alt_path : "";
			col.field_slot = spec.field_slot;
			if (col.source == Source::DataField && (col.field_slot < 0 || (size_t) col.field_slot >= nfields))
				col.source = Source::Other; /* a caller bug: never an index out of range */
			columns_.push_back(std::move(col));
		}
		return matcher_.Build(field_names, nfields);
	} catch (...) {
		columns_.clear();
		return false;
	}
}

void
Locator::Find(const json::Document &doc, const json::Node *rec, const json::Node *data,
			  const json::Node **fields, const json::Node **out) const noexcept
{
	if (matcher_.Size() > 0)
		matcher_.Match(doc, data, fields);
	for (size_t c = 0; c < columns_.size(); c++) {
		const Column &col = columns_[c];
		switch (col.source) {
			case Source::Path:
				out[c] = record::FindPathSource(doc, rec, col.path.c_str(),
												col.has_alt ? col.alt_path.c_str() : nullptr);
				break;
			case Source::DataField:
				out[c] = fields[col.field_slot];
				break;
			case Source::Other:
				out[c] = nullptr;
				break;
		}
	}
}

bool
MakeLocator(const ColumnSpec *columns, size_t ncolumns, const std::string_view *field_names, size_t nfields,
			LocatorRef *out) noexcept
{
	try {
		auto locator = std::make_shared<Locator>();
		if (!locator->Build(columns, ncolumns, field_names, nfields)) {
			out->locator.reset();
			return false;
		}
		out->locator = std::move(locator);
		return true;
	} catch (...) {
		out->locator.reset();
		return false;
	}
}

bool
LocatorSet::Add(std::string_view collection, const LocatorRef &ref) noexcept
{
	if (!ref.locator)
		return false;
	try {
		for (Entry &e : entries_)
			if (e.collection == collection) {
				e.locator = ref.locator;
				return true;
			}
		entries_.push_back(Entry{std::string(collection), ref.locator});
		return true;
	} catch (...) {
		return false;
	}
}

const Locator *
LocatorSet::Find(std::string_view collection) const noexcept
{
	for (const Entry &e : entries_)
		if (e.collection == collection)
			return e.locator.get();
	return nullptr;
}

void
Prepared::Clear() noexcept
{
	ready_ = false;
	stream_ = false;
	locators_.Clear();
	fields_.clear();
	errors_.clear();
	messages_.clear();
	message_errors_.clear();
	located_.clear();
	offsets_.clear();
	sources_.clear();
}

/* Sizes the per-record arrays and copies the locators; throws what allocation throws. */
bool
Prepared::Start(size_t n, const LocatorSet &locators)
{
	locators_ = locators;
	located_.assign(n, nullptr);
	offsets_.assign(n, 0);
	return true;
}

/* Record i's columns, when its collection has a locator; throws what allocation throws. */
void
Prepared::Locate(const json::Document &doc, size_t i, const json::Node *rec, const json::Node *data,
				 std::string_view collection)
{
	const Locator *loc = locators_.Find(collection);
	if (loc == nullptr)
		return;
	scratch_.resize(loc->FieldCount() > 0 ? loc->FieldCount() : 1);
	size_t at = sources_.size();
	sources_.resize(at + loc->Columns());
	loc->Find(doc, rec, data, scratch_.data(), sources_.data() + at);
	located_[i] = loc;
	offsets_[i] = at;
}

void
Prepared::PrepareV1(const json::Document &doc, const json::Node *const *records, size_t n,
					const LocatorSet &locators) noexcept
{
	Clear();
	try {
		Start(n, locators);
		fields_.resize(n);
		errors_.resize(n);
		for (size_t i = 0; i < n; i++) {
			if (records[i] == nullptr) {
				errors_[i] = record::FieldError::NotObject;
				continue;
			}
			record::Fields &f = fields_[i];
			errors_[i] = record::ValidateFields(doc, records[i], &f);
			if (errors_[i] != record::FieldError::None || f.collection == nullptr)
				continue;
			Locate(doc, i, records[i], f.data, std::string_view(f.collection, f.collection_len));
		}
	} catch (...) {
		Clear();
		return;
	}
	ready_ = true;
}

void
Prepared::PrepareStream(const json::Document &doc, const json::Node *const *messages, size_t n,
						const LocatorSet &locators) noexcept
{
	Clear();
	try {
		Start(n, locators);
		messages_.resize(n);
		message_errors_.resize(n);
		std::string collection;
		for (size_t i = 0; i < n; i++) {
			if (messages[i] == nullptr) {
				message_errors_[i] = stream::MessageError::NotObject;
				continue;
			}
			stream::Message &m = messages_[i];
			message_errors_[i] = stream::ValidateMessage(doc, messages[i], &m);
			if (message_errors_[i] != stream::MessageError::None)
				continue;
			collection.assign(m.schema.data(), m.schema.size());
			collection += '.';
			collection.append(m.table.data(), m.table.size());
			Locate(doc, i, messages[i], m.action == stream::Action::Delete ? nullptr : m.record, collection);
		}
	} catch (...) {
		Clear();
		return;
	}
	stream_ = true;
	ready_ = true;
}

const json::Node *const *
Prepared::Sources(size_t i, const Locator *locator) const noexcept
{
	if (!ready_ || locator == nullptr || i >= located_.size() || located_[i] != locator)
		return nullptr;
	return sources_.data() + offsets_[i];
}

} /* namespace prep */
} /* namespace sequin_sync */
