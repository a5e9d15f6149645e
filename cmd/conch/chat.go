package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/demo"
	"github.com/magicconch/conch/llama"
)

func init() {
	var (
		run    modelRun
		system string
		n      int
		stats  bool
	)
	cmd := &cobra.Command{
		Use:   "chat [-m MODEL.gguf] [--lora ADAPTER.gguf]",
		Short: "Chat with a model in the terminal, turn after turn",
		Long: `chat talks with a model in its chat template (the one fine-tuning used), keeping the
conversation. Type a message and press Enter; /reset starts over, /exit or Ctrl-D quits,
Ctrl-C stops an answer. Each turn reuses what earlier turns computed, so only the new
message is read. Without --model it talks to the built-in magic conch.
When the input is not a terminal, every line is one message, for scripts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if run.model == "" {
				m, err := demo.ServedModel()
				if err != nil {
					return err
				}
				run.model = m
				if isTerminal(os.Stdin) {
					fmt.Fprintln(os.Stderr, "(the built-in magic conch, a tiny demo model: chat with your own with -m MODEL.gguf)")
				}
			}
			m, lctx, closeAll, err := run.open()
			if err != nil {
				return err
			}
			defer closeAll()
			c := &chatSession{m: m, lctx: lctx, render: chat.NewRenderer(m, slog.Warn), system: system,
				opt: llama.GenerateOptions{MaxTokens: n, Sampler: run.sampler}, stats: stats}
			return c.loop(os.Stdin, cmd.OutOrStdout(), isTerminal(os.Stdin))
		},
	}
	f := cmd.Flags()
	run.addFlags(f, "model GGUF file (default: the built-in demo)")
	f.StringVar(&system, "system", "", "system message")
	f.IntVarP(&n, "max-tokens", "n", 512, "most tokens per answer")
	f.BoolVar(&stats, "stats", false, "print each answer's speed to stderr")
	root.AddCommand(cmd)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// chatSession is one conversation on one context. seq is what sequence 0 holds, so that
// the next turn decodes only what is new.
type chatSession struct {
	m      *llama.Model
	lctx   *llama.Context
	render *chat.Renderer
	system string
	opt    llama.GenerateOptions
	stats  bool

	msgs []llama.Message
	seq  []llama.Token
}

func (c *chatSession) reset() {
	c.msgs = c.msgs[:0]
	if c.system != "" {
		c.msgs = append(c.msgs, llama.Message{Role: "system", Content: c.system})
	}
}

// loop reads messages from in until /exit or the end of input. On a terminal the first
// Ctrl-C stops the answer being written; at the prompt it quits.
func (c *chatSession) loop(in io.Reader, out io.Writer, terminal bool) error {
	c.reset()
	var (
		mu     sync.Mutex
		cancel context.CancelFunc // of the answer being written, nil at the prompt
	)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer func() { signal.Stop(sigs); close(sigs) }()
	go func() {
		for range sigs {
			mu.Lock()
			stop := cancel
			mu.Unlock()
			if stop == nil {
				fmt.Fprintln(out)
				os.Exit(0)
			}
			stop()
		}
	}()

	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for {
		if terminal {
			fmt.Fprint(out, "> ")
		}
		if !sc.Scan() {
			if terminal {
				fmt.Fprintln(out)
			}
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		switch line {
		case "":
			continue
		case "/exit", "/quit", "/bye":
			return nil
		case "/reset", "/clear":
			c.reset()
			fmt.Fprintln(out, "(a new conversation)")
			continue
		}
		ctx, stop := context.WithCancel(context.Background())
		mu.Lock()
		cancel = stop
		mu.Unlock()
		err := c.turn(ctx, line, out)
		mu.Lock()
		cancel = nil
		mu.Unlock()
		stop()
		if err != nil {
			fmt.Fprintln(out, "(error: "+err.Error()+")")
		}
	}
}

// turn answers one user message, streaming the answer to out.
func (c *chatSession) turn(ctx context.Context, text string, out io.Writer) error {
	c.msgs = append(c.msgs, llama.Message{Role: "user", Content: text})
	p, dropped, err := c.fit()
	if err != nil {
		c.msgs = c.msgs[:len(c.msgs)-1]
		return err
	}
	if dropped > 0 {
		fmt.Fprintf(out, "(the %d oldest messages no longer fit the context and were dropped)\n", dropped)
	}
	opt := c.opt
	opt.Stop = p.Stops
	opt.Cached = llama.CommonPrefix(c.seq, p.Tokens)
	res, err := c.lctx.Generate(ctx, p.Tokens, opt, func(s string) bool { fmt.Fprint(out, s); return true })
	fmt.Fprintln(out)
	c.seq = res.Sequence // nil after a failed decode: the next turn starts afresh
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(out, "(stopped)")
		err = nil
	}
	if err != nil {
		c.msgs = c.msgs[:len(c.msgs)-1]
		return err
	}
	c.msgs = append(c.msgs, llama.Message{Role: "assistant", Content: res.Text})
	if c.stats {
		printStats(res)
	}
	return nil
}

// fit renders the conversation, dropping the oldest turns (never the system message or
// the new one) until it leaves room for an answer in the context.
func (c *chatSession) fit() (chat.Prompt, int, error) {
	room := c.lctx.NCtx() / 4
	if c.opt.MaxTokens > 0 {
		room = min(room, c.opt.MaxTokens)
	}
	dropped := 0
	for {
		p, err := c.render.Render(c.msgs)
		if err != nil {
			return p, dropped, err
		}
		if len(p.Tokens)+room <= c.lctx.NCtx() {
			return p, dropped, nil
		}
		first := 0
		if len(c.msgs) > 0 && c.msgs[0].Role == "system" {
			first = 1
		}
		if len(c.msgs)-first <= 1 {
			return p, dropped, fmt.Errorf("the message (%d tokens) is too long for the context of %d (--ctx-size)", len(p.Tokens), c.lctx.NCtx())
		}
		c.msgs = append(c.msgs[:first], c.msgs[first+1:]...)
		dropped++
	}
}
