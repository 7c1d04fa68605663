//! Buffers a backend owns: host memory for the CPU, device memory for CUDA. The engine
//! never reads one directly; it allocates through the backend ([`Backend::zeros_f32`],
//! [`Backend::upload_f32`], ...), passes views of them to the backend's operations, and
//! reads back ([`Backend::download_f32`]) only what leaves a step: the per-row losses, the
//! gradients, the updated parameters.
//!
//! A [`View`] or [`ViewMut`] is a contiguous range of one buffer (a row block of the LM
//! head's input, one LoRA slot of the flat adapter); the borrow checker keeps a written
//! view apart from every other view of the same buffer, as with slices.
//!
//! [`Backend::zeros_f32`]: super::Backend::zeros_f32
//! [`Backend::upload_f32`]: super::Backend::upload_f32
//! [`Backend::download_f32`]: super::Backend::download_f32

use std::any::Any;
use std::marker::PhantomData;
use std::ops::Range;

/// `len` elements of `T` in a backend's memory, in the backend's own form (the CPU's is a
/// `Vec<T>`). Only the backend that made it can read it.
pub struct Buf<T> {
	len: usize,
	data: Box<dyn Any + Send + Sync>,
	_elem: PhantomData<fn() -> T>,
}

impl<T: 'static> Buf<T> {
	/// A buffer of `len` elements held as `data` (for backends).
	pub fn new<D: Any + Send + Sync>(len: usize, data: D) -> Self {
		Buf { len, data: Box::new(data), _elem: PhantomData }
	}

	pub fn len(&self) -> usize {
		self.len
	}

	pub fn is_empty(&self) -> bool {
		self.len == 0
	}

	/// The backend's own form; panics if another backend made it.
	pub fn data<D: 'static>(&self) -> &D {
		self.data.downcast_ref::<D>().unwrap_or_else(|| panic!("a buffer made by another backend"))
	}

	/// The backend's own form, to write; panics if another backend made it.
	pub fn data_mut<D: 'static>(&mut self) -> &mut D {
		self.data.downcast_mut::<D>().unwrap_or_else(|| panic!("a buffer made by another backend"))
	}

	/// The whole buffer.
	pub fn view(&self) -> View<'_, T> {
		View { buf: self, start: 0, len: self.len }
	}

	/// Elements `range`; panics outside the buffer.
	pub fn slice(&self, range: Range<usize>) -> View<'_, T> {
		self.view().slice(range)
	}

	/// The whole buffer, to write.
	pub fn view_mut(&mut self) -> ViewMut<'_, T> {
		let len = self.len;
		ViewMut { buf: self, start: 0, len }
	}

	/// Elements `range`, to write; panics outside the buffer.
	pub fn slice_mut(&mut self, range: Range<usize>) -> ViewMut<'_, T> {
		check_range(&range, self.len);
		ViewMut { buf: self, start: range.start, len: range.end - range.start }
	}
}

fn check_range(range: &Range<usize>, len: usize) {
	assert!(range.start <= range.end && range.end <= len, "range {range:?} outside a buffer of {len}");
}

/// A contiguous range of a [`Buf`], read only.
pub struct View<'a, T> {
	buf: &'a Buf<T>,
	start: usize,
	len: usize,
}

impl<T> Clone for View<'_, T> {
	fn clone(&self) -> Self {
		*self
	}
}

impl<T> Copy for View<'_, T> {}

impl<'a, T: 'static> View<'a, T> {
	pub fn len(&self) -> usize {
		self.len
	}

	pub fn is_empty(&self) -> bool {
		self.len == 0
	}

	/// Where the view lies in its buffer.
	pub fn range(&self) -> Range<usize> {
		self.start..self.start + self.len
	}

	pub fn buf(&self) -> &'a Buf<T> {
		self.buf
	}

	/// Elements `range` of this view; panics outside it.
	pub fn slice(self, range: Range<usize>) -> View<'a, T> {
		check_range(&range, self.len);
		View { buf: self.buf, start: self.start + range.start, len: range.end - range.start }
	}
}

/// A contiguous range of a [`Buf`], to write.
pub struct ViewMut<'a, T> {
	buf: &'a mut Buf<T>,
	start: usize,
	len: usize,
}

impl<'a, T: 'static> ViewMut<'a, T> {
	pub fn len(&self) -> usize {
		self.len
	}

	pub fn is_empty(&self) -> bool {
		self.len == 0
	}

	/// Where the view lies in its buffer.
	pub fn range(&self) -> Range<usize> {
		self.start..self.start + self.len
	}

	/// The buffer and the range (for backends).
	pub fn into_parts(self) -> (&'a mut Buf<T>, Range<usize>) {
		let range = self.range();
		(self.buf, range)
	}

	/// The same range, borrowed again (to pass on and keep).
	pub fn reborrow(&mut self) -> ViewMut<'_, T> {
		ViewMut { buf: self.buf, start: self.start, len: self.len }
	}

	/// The same range, read only.
	pub fn as_view(&self) -> View<'_, T> {
		View { buf: self.buf, start: self.start, len: self.len }
	}
}

/// Host memory as a CPU backend holds it: a view's elements as a slice.
pub fn host<'a, T: 'static>(v: View<'a, T>) -> &'a [T] {
	let range = v.range();
	&v.buf.data::<Vec<T>>()[range]
}

/// A written view's elements as a slice (a CPU backend's buffers are `Vec<T>`).
pub fn host_mut<'a, T: 'static>(v: ViewMut<'a, T>) -> &'a mut [T] {
	let (buf, range) = v.into_parts();
	&mut buf.data_mut::<Vec<T>>()[range]
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn views_are_the_ranges_they_name() {
		let mut b = Buf::<f32>::new(6, vec![0f32, 1., 2., 3., 4., 5.]);
		assert_eq!(host(b.slice(2..5)), &[2., 3., 4.]);
		assert_eq!(host(b.slice(1..6).slice(1..3)), &[2., 3.]);
		host_mut(b.slice_mut(4..6)).fill(9.);
		assert_eq!(host(b.view()), &[0., 1., 2., 3., 9., 9.]);
		assert!(b.slice(6..6).is_empty());
	}

	#[test]
	#[should_panic(expected = "outside a buffer of 6")]
	fn a_range_past_the_end_is_refused() {
		let b = Buf::<f32>::new(6, vec![0f32; 6]);
		let _ = b.slice(4..7);
	}

	#[test]
	#[should_panic(expected = "another backend")]
	fn a_buffer_of_another_form_is_refused() {
		let b = Buf::<f32>::new(2, [0u8; 2]);
		let _ = host(b.view());
	}
}
