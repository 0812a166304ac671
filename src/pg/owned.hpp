/*
 * owned.hpp - a C++ object whose lifetime is a memory context's: deleted when the context is
 * reset or deleted, also when an error unwinds the stack, so no destructor ever depends on a
 * longjmp.  How Postgres-side code holds core objects that own memory (a Document, an
 * ArrayLiteralWriter, a FieldMatcher).
 *
 * Postgres-side code: include after the extern "C" block with postgres.h (and <new>).
 */
#ifndef SEQUIN_SYNC_OWNED_HPP
#define SEQUIN_SYNC_OWNED_HPP

namespace sequin_sync {

template <class T>
void
DeleteOwned(void *arg)
{
	delete static_cast<T *>(arg);
}

/* A new T on the C++ heap, deleted with cxt; raises out of memory. */
template <class T>
T *
NewOwnedBy(MemoryContext cxt)
{
	T *obj = new (std::nothrow) T();
	if (obj == nullptr)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	MemoryContextCallback *cb = (MemoryContextCallback *) MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));
	cb->func = DeleteOwned<T>;
	cb->arg = obj;
	MemoryContextRegisterResetCallback(cxt, cb);
	return obj;
}

} /* namespace sequin_sync */

#endif
