package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/magicconch/conch/internal/train"
	"github.com/spf13/cobra"
)

func init() {
	cmd := &cobra.Command{
		Use:   "finetune --model BASE.gguf --dataset NAMES --output DIR",
		Short: "Fine-tune a model with LoRA on LLaMA-Factory datasets",
		Long: `finetune trains a LoRA adapter for a GGUF base model on datasets described by a
LLaMA-Factory dataset_info.json, and writes into --output: adapter.gguf, checkpoints/,
trainer_log.jsonl, loss.png and config.yaml.

Settings come from flags, over CONCH_* environment variables (CONCH_LEARNING_RATE,
CONCH_LORA_RANK, ... or CONCH_ and the flag's name: CONCH_EPOCHS), over a YAML file
(--config; LLaMA-Factory's key names such as model_name_or_path, num_train_epochs and
per_device_train_batch_size are accepted), over the defaults.

Ctrl-C finishes the current step, saves a checkpoint and stops; continue with
  conch finetune --output DIR --resume`,
		Example: `  conch finetune --model base.gguf --dataset-dir data --dataset magic_conch --output runs/conch
  conch finetune --model base.gguf --dataset magic_conch --lora-target all,lm_head --output runs/head
  conch finetune --config train.yaml
  conch finetune --output runs/conch --resume`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, warnings, err := train.LoadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			for _, w := range warnings {
				slog.Warn(w)
			}
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			defer func() { signal.Stop(sigs); close(sigs) }()
			go func() {
				if _, ok := <-sigs; !ok {
					return
				}
				// From now on a second Ctrl-C kills at once, as a user pressing it again expects.
				signal.Stop(sigs)
				fmt.Fprintln(os.Stderr, "\nstopping after the current step (press Ctrl-C again to quit without a checkpoint)...")
				cancel()
			}()
			_, err = train.Run(ctx, cfg, os.Stdout)
			return err
		},
	}
	train.AddFlags(cmd.Flags())
	root.AddCommand(cmd)
}
