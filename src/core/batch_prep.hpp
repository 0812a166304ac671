/*
 * batch_prep.hpp - the part of applying a batch that needs no Postgres, done ahead on the
 * prefetch thread (pull_session.hpp): each record's standard fields (record::ValidateFields), or
 * each Sequin Stream message's (stream::ValidateMessage), and the JSON node every mapped column
 * takes its value from (a path, or a data field found by name).  What is left for the applying thread is Postgres' own work: converting those values
 * with the columns' input functions and writing the rows.
 *
 * The thread cannot read the catalog, so it works from Locators: a copy of what a mapping needs
 * to find its columns' values (the column names normalised by a FieldMatcher, the paths), built
 * by the engine when it resolves the mapping and handed to the session after each batch.  A
 * record prepared with a locator is used only by the mapping that still holds that very
 * locator (Prepared::Sources): a mapping resolved again since (the table or the mapping
 * changed) has a new one, and finds its values itself.  Preparing is an optimisation; the
 * engine gets the same nodes either way.
 *
 * Postgres-free and exception-free.
 */
#ifndef SEQUIN_SYNC_BATCH_PREP_HPP
#define SEQUIN_SYNC_BATCH_PREP_HPP

#ifdef POSTGRES_H
#error "batch_prep.hpp must stay free of Postgres headers"
#endif

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_doc.hpp"
#include "core/record.hpp"
#include "core/stream_message.hpp"

namespace sequin_sync {
namespace prep {

/* Where a column's value is, as far as a locator knows (the engine fills the others). */
enum class Source : uint8_t {
	Other,		/* not a JSON node of the record: the version, the deleted flag */
	Path,		/* record::FindPathSource(path, alt_path) */
	DataField,	/* the mapping's FieldMatcher, slot field_slot */
};

struct ColumnSpec {
	Source source = Source::Other;
	const char *path = nullptr;		/* Path */
	const char *alt_path = nullptr;	/* Path, may be nullptr */
	int field_slot = -1;			/* DataField */
};

/* A mapping's columns, as the prefetch thread finds their values.  Immutable once built. */
class Locator {
public:
	/*
	 * Copies the columns and the DataField columns' names (field_names[slot]); false when
	 * memory runs out.
	 */
	bool Build(const ColumnSpec *columns, size_t ncolumns, const std::string_view *field_names,
			   size_t nfields) noexcept;
	size_t Columns() const noexcept { return columns_.size(); }
	/*
	 * out[c] = the node column c takes its value from in rec (nullptr: none, or Other);
	 * fields is scratch of FieldCount() entries.
	 */
	void Find(const json::Document &doc, const json::Node *rec, const json::Node *data,
			  const json::Node **fields, const json::Node **out) const noexcept;
	size_t FieldCount() const noexcept { return matcher_.Size(); }

private:
	struct Column {
		Source source;
		std::string path;
		std::string alt_path;
		bool has_alt;
		int field_slot;
	};
	std::vector<Column> columns_;
	record::FieldMatcher matcher_;
};

/* A shared handle, for an owner that is not C++ (a Postgres memory context). */
struct LocatorRef {
	std::shared_ptr<const Locator> locator;
};

/* A new locator into *out; false when memory runs out (*out is then empty). */
bool MakeLocator(const ColumnSpec *columns, size_t ncolumns, const std::string_view *field_names,
				 size_t nfields, LocatorRef *out) noexcept;

/* The locators of a consumer's collections, for the next prefetch. */
class LocatorSet {
public:
	void Clear() noexcept { entries_.clear(); }
	/* false when memory runs out (the collection is then not prepared: harmless). */
	bool Add(std::string_view collection, const LocatorRef &ref) noexcept;
	/* nullptr when the collection has none. */
	const Locator *Find(std::string_view collection) const noexcept;
	bool Empty() const noexcept { return entries_.empty(); }

private:
	struct Entry {
		std::string collection;
		std::shared_ptr<const Locator> locator;
	};
	std::vector<Entry> entries_;
};

/* One batch, prepared. */
class Prepared {
public:
	/*
	 * ValidateFields of every record, and where a record's collection has a locator in
	 * locators, its columns' nodes.  On failure (memory) nothing is
	 * prepared: Ready() is false.
	 */
	void PrepareV1(const json::Document &doc, const json::Node *const *records, size_t n,
				   const LocatorSet &locators) noexcept;
	/* The same for Sequin Stream messages: ValidateMessage, the collection "schema.table", and
	 * the columns' nodes (data fields from "record", none for a delete). */
	void PrepareStream(const json::Document &doc, const json::Node *const *messages, size_t n,
					   const LocatorSet &locators) noexcept;
	void Clear() noexcept;

	/* Whether Fields/Error (v1) or Message/MessageError (stream) hold every record of the batch. */
	bool Ready() const noexcept { return ready_; }
	bool Stream() const noexcept { return stream_; }
	size_t Count() const noexcept { return stream_ ? messages_.size() : fields_.size(); }
	const record::Fields &Fields(size_t i) const noexcept { return fields_[i]; }
	record::FieldError Error(size_t i) const noexcept { return errors_[i]; }
	const stream::Message &Message(size_t i) const noexcept { return messages_[i]; }
	stream::MessageError MessageError(size_t i) const noexcept { return message_errors_[i]; }
	/*
	 * Record i's column nodes (Locator::Find's out) when they were found with locator, else
	 * nullptr: the caller finds them itself.
	 */
	const json::Node *const *Sources(size_t i, const Locator *locator) const noexcept;

private:
	bool Start(size_t n, const LocatorSet &locators);
	void Locate(const json::Document &doc, size_t i, const json::Node *rec, const json::Node *data,
				std::string_view collection);

	bool ready_ = false;
	bool stream_ = false;
	std::vector<stream::Message> messages_;
	std::vector<stream::MessageError> message_errors_;
	LocatorSet locators_;	/* a copy: keeps every locator of located_ alive (so a pointer
							 * compared in Sources is never one reused by a newer locator) */
	std::vector<record::Fields> fields_;
	std::vector<record::FieldError> errors_;
	std::vector<const Locator *> located_;	/* per record; nullptr: not located */
	std::vector<size_t> offsets_;			/* per record, into sources_ */
	std::vector<const json::Node *> sources_;
	std::vector<const json::Node *> scratch_;
};

} /* namespace prep */
} /* namespace sequin_sync */

#endif
