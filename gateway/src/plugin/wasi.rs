//! The WASI a plugin is linked with: what Rust's `wasm32-wasip2` std imports,
//! with nothing granted and no call that waits.
//!
//! Hooks run synchronously on the gateway's own thread (an async call would
//! put every hook on a fiber, which costs more than a short hook itself).
//! wasmtime-wasi's synchronous bindings block on the Tokio runtime for the few
//! calls that can wait, which panics inside it; here those calls are polled
//! once instead, and trap if they would have to wait (a sleep, a read that
//! never comes). No folder is preopened and stdio goes nowhere, so every
//! stream a plugin can hold is ready at once. WASI sockets are not linked at
//! all: a component importing them is refused at load (`services::classify`).

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
use wasmtime_wasi::p2::{StreamError, StreamResult};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiView};

/// A WASI call that would have made the gateway's thread wait.
#[derive(Debug, thiserror::Error)]
#[error("the plugin waited on {0}; plugins may not block")]
pub struct WouldBlock(&'static str);

/// Most random bytes one `get-random-bytes` call returns. Host calls cannot
/// be interrupted, so a long one would run past the hook's deadline (64 MiB,
/// wasmtime's default, takes about a tenth of a second).
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The context each instance gets: no environment, arguments or folders;
/// stdio goes nowhere. The clocks are the host's real ones (wall and
/// monotonic), so `SystemTime::now()` and `Instant::now()` work in plugins:
/// token expiry and rate limits need them.
pub fn context() -> WasiCtx {
    WasiCtx::builder().max_random_size(MAX_RANDOM_BYTES).build()
}

/// Adds every `wasi:cli/imports` interface to `linker`, without waiting calls.
pub fn link<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let l = linker;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    // No folder is preopened, so a plugin never holds a descriptor and none
    // of the (waiting) descriptor calls can be reached.
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    wasmtime_wasi::p2::bindings::io::error::add_to_linker::<T, HasSelf<ResourceTable>>(l, |t| {
        t.ctx().table
    })?;
    poll::add_to_linker::<T, NonBlocking>(l, |t| NonBlockingIo(t.ctx().table))?;
    streams::add_to_linker::<T, NonBlocking>(l, |t| NonBlockingIo(t.ctx().table))?;
    Ok(())
}

/// Polls `future` once: its output, or `None` if it would have to wait.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

fn would_block<T>(what: &'static str) -> StreamResult<T> {
    Err(StreamError::Trap(WouldBlock(what).into()))
}

/// `wasi:io/poll` and `wasi:io/streams` over the instance's resource table,
/// with every waiting call polled once.
struct NonBlocking;

impl HasData for NonBlocking {
    type Data<'a> = NonBlockingIo<'a>;
}

struct NonBlockingIo<'a>(&'a mut ResourceTable);

type Pollable = wasmtime_wasi::p2::DynPollable;
type InputStream = streams::InputStream;
type OutputStream = streams::OutputStream;

impl poll::Host for NonBlockingIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        poll_once(async_poll::Host::poll(self.0, pollables))
            .unwrap_or_else(|| Err(WouldBlock("wasi:io/poll.poll").into()))
    }
}

impl poll::HostPollable for NonBlockingIo<'_> {
    fn ready(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<bool> {
        poll_once(async_poll::HostPollable::ready(self.0, pollable)).unwrap_or(Ok(false))
    }
    fn block(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        poll_once(async_poll::HostPollable::block(self.0, pollable))
            .unwrap_or_else(|| Err(WouldBlock("wasi:io/poll.pollable.block").into()))
    }
    fn drop(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for NonBlockingIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        poll_once(async_streams::HostOutputStream::drop(self.0, stream))
            .unwrap_or_else(|| Err(WouldBlock("closing an output stream").into()))
    }
    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        poll_once(async_streams::HostOutputStream::blocking_write_and_flush(
            self.0, stream, bytes,
        ))
        .unwrap_or_else(|| would_block("a blocking write"))
    }
    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        poll_once(
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len),
        )
        .unwrap_or_else(|| would_block("a blocking write"))
    }
    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        poll_once(async_streams::HostOutputStream::blocking_flush(
            self.0, stream,
        ))
        .unwrap_or_else(|| would_block("a blocking flush"))
    }
    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        poll_once(async_streams::HostOutputStream::blocking_splice(
            self.0, dst, src, len,
        ))
        .unwrap_or_else(|| would_block("a blocking splice"))
    }
}

impl streams::HostInputStream for NonBlockingIo<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        poll_once(async_streams::HostInputStream::drop(self.0, stream))
            .unwrap_or_else(|| Err(WouldBlock("closing an input stream").into()))
    }
    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        poll_once(async_streams::HostInputStream::blocking_read(
            self.0, stream, len,
        ))
        .unwrap_or_else(|| would_block("a blocking read"))
    }
    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        poll_once(async_streams::HostInputStream::blocking_skip(
            self.0, stream, len,
        ))
        .unwrap_or_else(|| would_block("a blocking read"))
    }
    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}
